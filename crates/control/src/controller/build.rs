//! `build`: run a Dockerfile (see [`crate::build`]).
//!
//! Stages are built in order, only those the target needs. Each step's
//! cache key chains its parent's; a hit reuses the layer without starting
//! anything. A RUN that misses gets a fresh sandbox of the building tenant
//! on an intermediate image (the stage's layers so far over its base),
//! runs the command through the agent, is stopped, and its root upper dir
//! is captured host-side through `dwell-hostfs` ([`dwell_build::layer`]).
//! COPY/ADD layers are written host-side from the context or another
//! stage, never following a symlink. The result is imported under each
//! tag. Whatever the outcome, the build's sandboxes and intermediate
//! images are removed before `build` returns; the work runs in a task of
//! its own, so a caller that goes away does not cut the cleanup short.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dwell_build::cache::{self, Cache, Entry};
use dwell_build::config::{duration_ns, Health, History, RunConfig};
use dwell_build::copy::{self, CopyArgs};
use dwell_build::expand::{pairs, words, Vars};
use dwell_build::layer::{self, LayerWriter, Limits};
use dwell_build::oci::{self, Layer};
use dwell_build::parse::{self, Form, Instruction};
use dwell_build::tree::Tree;
use dwell_build::BuildError;
use dwell_proto::{ExecRequest, ProcessEvent};
use dwell_storage::Image;
use futures_util::FutureExt;
use tokio::sync::mpsc::Sender;

use super::Controller;
use crate::build::{step_error, BuildEvent, BuildOutput, BuildRequest, Stream, MAX_BUILD_TIMEOUT};
use crate::context::blocking;
use crate::error::{Error, Result};
use crate::model::{CreateRequest, Mode};

/// Prefix of intermediate image names (removed when the build ends).
pub const TMP_IMAGE_PREFIX: &str = "dwell-build-";
/// The most entries one layer holds.
const MAX_ENTRIES: usize = 1_000_000;
/// The most bytes of layers when the sandbox's disk is not known.
const DEFAULT_LAYER_BYTES: u64 = 10 << 30;

/// One stage being built.
#[derive(Clone)]
struct Stage {
    name: Option<String>,
    base: Image,
    layers: Vec<Layer>,
    config: RunConfig,
    history: Vec<History>,
    key: String,
    /// ARG values in scope.
    args: Vars,
    /// ENTRYPOINT/CMD set in this Dockerfile's stage.
    cmd_set: bool,
    /// Materialized image of the current layers: (layer count, image).
    image: Option<(usize, Image)>,
    /// The base as an OCI image (layers and config), for a base that is a
    /// stored OCI image: results then hold its layers too (a complete
    /// image that exports and pushes). `None` for `host`.
    base_oci: Option<Arc<oci::BaseImage>>,
}

impl Stage {
    /// The config, every layer of the image and the base to stack it on.
    fn parts(&self) -> (Vec<u8>, Vec<Layer>, Image) {
        match &self.base_oci {
            Some(b) => {
                let cfg = oci::config_over(b, &self.config, &self.layers, &self.history);
                let layers = b.layers.iter().chain(&self.layers).cloned().collect();
                let mut empty = self.base.clone();
                empty.layers.clear();
                empty.host_dirs.clear();
                empty.size_bytes = 0;
                (cfg, layers, empty)
            }
            None => (
                oci::config_json(&self.config, &self.layers, &self.history),
                self.layers.clone(),
                self.base.clone(),
            ),
        }
    }
}

/// A stage definition: its FROM and the instructions after it.
struct StageDef {
    from: Instruction,
    steps: Vec<Instruction>,
    name: Option<String>,
}

/// State shared by the steps of one build.
struct Run<'a> {
    ctl: &'a Controller,
    tenant: &'a str,
    req: &'a BuildRequest,
    events: &'a Sender<BuildEvent>,
    cache: Arc<Cache>,
    tmp_images: Vec<String>,
    /// Staging dirs (exported base layouts) removed when the build ends.
    tmp_dirs: Vec<PathBuf>,
    sandboxes: Vec<String>,
    cached: usize,
    steps: usize,
    count: usize,
    ignore: Option<dwell_build::ignore::Ignore>,
    disk_bytes: u64,
}

fn base_config(img: &Image) -> RunConfig {
    RunConfig {
        env: img.env.clone(),
        entrypoint: (!img.entrypoint.is_empty()).then(|| img.entrypoint.clone()),
        cmd: (!img.cmd.is_empty()).then(|| img.cmd.clone()),
        workdir: img.workdir.clone().unwrap_or_default(),
        user: img.user.clone().unwrap_or_default(),
        labels: img.labels.clone(),
        exposed_ports: img
            .exposed_ports
            .iter()
            .map(|p| (p.clone(), serde_json::json!({})))
            .collect(),
        healthcheck: img.healthcheck.as_ref().map(|h| Health {
            test: h.test.clone(),
            interval: h.interval_ms.map(|n| n * 1_000_000),
            timeout: h.timeout_ms.map(|n| n * 1_000_000),
            start_period: h.start_period_ms.map(|n| n * 1_000_000),
            retries: h.retries,
        }),
        stop_signal: img.stop_signal.clone(),
        ..Default::default()
    }
}

fn invalid(step: usize, m: impl Into<String>) -> Error {
    step_error(step, BuildError::Invalid(m.into()))
}

/// The most bytes a stage's ARGs, ENVs and LABELs may hold together.
const MAX_STAGE_VARS: usize = 4 << 20;

/// Refuse a stage whose ARG/ENV/LABEL values grew past [`MAX_STAGE_VARS`]
/// (each value is capped at expansion; many of them are capped here).
fn check_vars_size(stage: &Stage) -> std::result::Result<(), String> {
    let args: usize = stage.args.iter().map(|(k, v)| k.len() + v.len()).sum();
    let env: usize = stage.config.env.iter().map(|e| e.len()).sum();
    let labels: usize = stage
        .config
        .labels
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    let total = args + env + labels;
    if total > MAX_STAGE_VARS {
        return Err(format!(
            "the stage's ARG, ENV and LABEL values total {total} bytes, over the limit of \
             {MAX_STAGE_VARS}; keep them short (put data in files)"
        ));
    }
    Ok(())
}

/// Split instructions into global ARGs and stages.
fn stages(ins: Vec<Instruction>) -> Result<(Vec<Instruction>, Vec<StageDef>)> {
    let mut globals = Vec::new();
    let mut out: Vec<StageDef> = Vec::new();
    for i in ins {
        if i.keyword == "FROM" {
            let w: Vec<&str> = i.args.split_whitespace().collect();
            let name = match w.as_slice() {
                [_] => None,
                [_, as_, n] if as_.eq_ignore_ascii_case("as") => Some(n.to_ascii_lowercase()),
                _ => {
                    return Err(step_error(
                        0,
                        BuildError::Parse(i.err("write FROM IMAGE or FROM IMAGE AS NAME")),
                    ))
                }
            };
            out.push(StageDef {
                from: i,
                steps: Vec::new(),
                name,
            });
        } else if let Some(s) = out.last_mut() {
            s.steps.push(i);
        } else if i.keyword == "ARG" {
            globals.push(i);
        } else {
            return Err(step_error(
                0,
                BuildError::Parse(i.err("comes before the first FROM; only ARG may")),
            ));
        }
    }
    if out.is_empty() {
        return Err(invalid(0, "the Dockerfile has no FROM"));
    }
    Ok((globals, out))
}

/// The stage a `--from=`/`FROM` word names: a name or an index.
fn stage_ref(defs: &[StageDef], before: usize, word: &str) -> Option<usize> {
    let w = word.to_ascii_lowercase();
    if let Some(i) = defs[..before]
        .iter()
        .position(|d| d.name.as_deref() == Some(w.as_str()))
    {
        return Some(i);
    }
    w.parse::<usize>().ok().filter(|&i| i < before)
}

fn cancelled(step: usize) -> Error {
    Error::BuildFailed {
        step,
        exit_code: None,
        message: format!("step {step}: the build was cancelled (its client went away)"),
        status: 499,
    }
}

/// How long `image prune` waits for running builds to release the cache.
const PRUNE_WAIT: Duration = Duration::from_secs(10);

/// The label that marks a build's RUN sandboxes.
const BUILD_LABEL: &str = "dwell.build";

impl Controller {
    /// Remove what builds interrupted by a daemon stop left: RUN sandboxes
    /// and intermediate images made before `before_ms` (this daemon's
    /// start; a build never outlives its daemon, and builds started since
    /// are left alone).
    pub async fn sweep_build_leftovers(&self, before_ms: i64) {
        // Only this node's: in a cluster, other nodes' builds are theirs.
        let Ok(all) = self.inner.own_sandboxes() else {
            return;
        };
        for sb in all.iter().map(crate::model::Sandbox::from_record) {
            if sb.spec.labels.contains_key(BUILD_LABEL) && sb.created_at < before_ms {
                match self.delete(&sb.tenant, &sb.id, true).await {
                    Ok(()) => {
                        tracing::info!(sandbox = sb.id, "removed an interrupted build's sandbox")
                    }
                    Err(e) => tracing::warn!(
                        sandbox = sb.id,
                        "removing an interrupted build's sandbox failed: {e}"
                    ),
                }
            }
        }
        let ctl = self.clone();
        let _ = blocking(move || {
            let Ok(images) = ctl.images().stored() else {
                return;
            };
            for img in images {
                if img.name.starts_with(TMP_IMAGE_PREFIX)
                    && (img.created_at as i64) * 1000 < before_ms
                {
                    let r = img.reference.clone().unwrap_or(img.name.clone());
                    if let Err(e) = ctl.images().remove(&r) {
                        tracing::warn!(
                            image = img.name,
                            "removing an interrupted build's image failed: {e}"
                        );
                    }
                }
            }
        })
        .await;
    }

    /// Build an image from a Dockerfile; progress goes to `events`.
    /// Dropping the receiver cancels the build (a running RUN is killed);
    /// either way the build's sandboxes and intermediate images are removed
    /// before this returns.
    pub async fn build(
        &self,
        tenant: &str,
        req: BuildRequest,
        events: Sender<BuildEvent>,
    ) -> Result<BuildOutput> {
        let permit = self.build_permit(tenant)?;
        let ctl = self.clone();
        let tenant = tenant.to_string();
        tokio::spawn(async move {
            let _permit = permit;
            ctl.build_task(&tenant, req, events).await
        })
        .await
        .map_err(|e| Error::Internal(format!("the build task failed: {e}")))?
    }

    async fn build_task(
        &self,
        tenant: &str,
        req: BuildRequest,
        events: Sender<BuildEvent>,
    ) -> Result<BuildOutput> {
        if req.tags.is_empty() {
            return Err(Error::invalid(
                "tags",
                "name the image: give at least one tag, e.g. -t mytool:1",
            ));
        }
        for t in &req.tags {
            if dwell_storage::is_builtin(t) || t.starts_with(TMP_IMAGE_PREFIX) {
                return Err(Error::invalid(
                    "tags",
                    format!("{t:?} is reserved; choose another name"),
                ));
            }
        }
        let instructions =
            parse::parse(&req.dockerfile).map_err(|e| step_error(0, BuildError::Parse(e)))?;
        let root = self.inner.images.root().to_path_buf();
        let cache = Arc::new(
            blocking(move || Cache::open(&root))
                .await?
                .map_err(|e| step_error(0, e))?,
        );
        let ignore = {
            let ctx = req.context_dir.clone();
            blocking(move || -> Result<Option<dwell_build::ignore::Ignore>> {
                let t = Tree::dir(&ctx).map_err(|e| {
                    Error::invalid("context_dir", format!("cannot read the build context: {e}"))
                })?;
                t.read_capped(Path::new(".dockerignore"), 1 << 20)
                    .map_err(|e| step_error(0, e))?
                    .map(|b| dwell_build::ignore::Ignore::parse(&String::from_utf8_lossy(&b)))
                    .transpose()
                    .map_err(|e| Error::invalid("context_dir", e))
            })
            .await??
        };
        let disk_bytes = match &req.disk {
            Some(d) => d.bytes("disk")?,
            None => DEFAULT_LAYER_BYTES,
        };
        let mut run = Run {
            ctl: self,
            tenant,
            req: &req,
            events: &events,
            cache,
            tmp_images: Vec::new(),
            tmp_dirs: Vec::new(),
            sandboxes: Vec::new(),
            cached: 0,
            steps: 0,
            count: 0,
            ignore,
            disk_bytes,
        };
        let deadline = self.build_deadline(&req)?;
        // A panic (a bug) or the deadline ends `all`; cleanup runs anyway,
        // removing the build's sandboxes (which kills a running step) and
        // intermediate images.
        let outcome = tokio::time::timeout(
            deadline,
            AssertUnwindSafe(run.all(instructions)).catch_unwind(),
        )
        .await;
        let result = match outcome {
            Ok(Ok(r)) => r,
            Ok(Err(panic)) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(tenant, "a build panicked: {what}");
                Err(Error::Internal(format!(
                    "the build stopped on an internal error ({what}); its sandboxes and \
                     intermediate images were removed. Please report this"
                )))
            }
            Err(_) => Err(Error::BuildFailed {
                step: run.steps,
                exit_code: None,
                message: format!(
                    "step {}: the build ran past its deadline of {}s and was stopped; give it \
                     more time with --timeout (up to {}s) or make the step faster",
                    run.steps,
                    deadline.as_secs(),
                    MAX_BUILD_TIMEOUT.as_secs()
                ),
                status: 422,
            }),
        };
        run.cleanup().await;
        result
    }
}

impl Controller {
    /// The deadline of a build: its own (at most [`MAX_BUILD_TIMEOUT`]) or
    /// the daemon's default.
    fn build_deadline(&self, req: &BuildRequest) -> Result<Duration> {
        match req.timeout_secs {
            None => Ok(self.build_limits().timeout),
            Some(0) => Err(Error::invalid(
                "timeout",
                "a build timeout of 0 seconds is not allowed; give a positive number of seconds",
            )),
            Some(s) if s > MAX_BUILD_TIMEOUT.as_secs() => Err(Error::invalid(
                "timeout",
                format!(
                    "a build timeout of {s}s is over the limit of {}s; give a smaller one",
                    MAX_BUILD_TIMEOUT.as_secs()
                ),
            )),
            Some(s) => Ok(Duration::from_secs(s)),
        }
    }
}

impl Run<'_> {
    /// Fail with "cancelled" when the caller dropped its receiver.
    fn check_cancelled(&self, index: usize) -> Result<()> {
        if self.events.is_closed() {
            return Err(cancelled(index));
        }
        Ok(())
    }

    async fn emit(&self, e: BuildEvent) {
        // A client that went away does not stop the build's cleanup.
        let _ = self.events.send(e).await;
    }

    async fn all(&mut self, instructions: Vec<Instruction>) -> Result<BuildOutput> {
        let (globals, defs) = stages(instructions)?;
        self.check_tags().await?;
        // Global ARGs: values for FROM lines.
        let mut global_args = Vars::new();
        for g in &globals {
            for (k, v) in pairs(&g.args, &global_args, false).map_err(|m| invalid(0, m))? {
                let val = self
                    .req
                    .build_args
                    .get(&k)
                    .cloned()
                    .or(v)
                    .unwrap_or_default();
                global_args.insert(k, val);
            }
            let total: usize = global_args.iter().map(|(k, v)| k.len() + v.len()).sum();
            if total > MAX_STAGE_VARS {
                return Err(invalid(
                    0,
                    format!(
                        "the global ARG values total {total} bytes, over the limit of \
                         {MAX_STAGE_VARS}; keep them short"
                    ),
                ));
            }
        }
        let target = match &self.req.target {
            Some(t) => defs
                .iter()
                .position(|d| d.name.as_deref() == Some(t.to_ascii_lowercase().as_str()))
                .ok_or_else(|| {
                    Error::invalid(
                        "target",
                        format!("no stage is named {t:?}; name one with FROM IMAGE AS {t}"),
                    )
                })?,
            None => defs.len() - 1,
        };
        // The stages the target needs.
        let mut needed = BTreeSet::new();
        let mut todo = vec![target];
        while let Some(i) = todo.pop() {
            if !needed.insert(i) {
                continue;
            }
            // Expanded as `stage()` does, so `FROM $ARG` naming a stage
            // builds that stage first.
            let raw = defs[i].from.args.split_whitespace().next().unwrap_or("");
            let from_word = words(raw, &global_args, true)
                .map(|w| w.join(""))
                .unwrap_or_else(|_| raw.to_string());
            if let Some(j) = stage_ref(&defs, i, &from_word) {
                todo.push(j);
            }
            for s in &defs[i].steps {
                if let Some(f) = s.flag("from") {
                    if let Some(j) = stage_ref(&defs, i, f) {
                        todo.push(j);
                    }
                }
            }
        }
        self.count = needed.iter().map(|&i| 1 + defs[i].steps.len()).sum();
        let mut built: BTreeMap<usize, Stage> = BTreeMap::new();
        for &i in &needed {
            if !built.is_empty() {
                crate::crashpoint::panicpoint("build:next-stage");
            }
            let stage = self.stage(&defs, i, &global_args, &built).await?;
            built.insert(i, stage);
        }
        let stage = built
            .remove(&target)
            .ok_or_else(|| Error::Internal(format!("stage {target} was not built")))?;
        self.finish(stage).await
    }

    fn next_index(&mut self) -> usize {
        self.steps += 1;
        self.steps
    }

    async fn stage(
        &mut self,
        defs: &[StageDef],
        i: usize,
        global_args: &Vars,
        built: &BTreeMap<usize, Stage>,
    ) -> Result<Stage> {
        let def = &defs[i];
        let index = self.next_index();
        let t0 = Instant::now();
        self.emit(BuildEvent::Step {
            index,
            count: self.count,
            text: def.from.text(),
        })
        .await;
        let from_word = def.from.args.split_whitespace().next().unwrap_or("");
        let image_ref = words(from_word, global_args, true)
            .map_err(|m| invalid(index, m))?
            .join("");
        let mut stage = if let Some(j) = stage_ref(defs, i, &image_ref) {
            let mut s = built.get(&j).cloned().ok_or_else(|| {
                invalid(
                    index,
                    format!("FROM {image_ref}: stage {j} was not built before this one"),
                )
            })?;
            s.key = cache::key(&s.key, &["FROM-STAGE"]);
            s.cmd_set = false;
            s.args = Vars::new();
            s
        } else {
            if image_ref.starts_with("snapshot:") {
                return Err(invalid(
                    index,
                    "FROM snapshot:NAME is not supported yet: create a sandbox from the snapshot \
                     and build FROM the image it uses, copying what you need",
                ));
            }
            // Only an image this tenant may use (another tenant's is "not
            // found"); one not stored yet is pulled, as for create.
            let pinned = self
                .ctl
                .image_for_create(self.tenant, &image_ref)
                .await
                .map_err(|e| match e {
                    Error::Storage(dwell_storage::StorageError::ImageNotFound(_)) => invalid(
                        index,
                        format!(
                            "image {image_ref:?} not found (dwell image ls lists the images \
                             you may use; pull or import it)"
                        ),
                    ),
                    e => e,
                })?;
            let ctl = self.ctl.clone();
            let base = blocking(move || ctl.images().get(&pinned)).await??;
            // A stored OCI image: its layout, so results are complete images.
            let base_oci = if base.digest.is_some() && base.host_dirs.is_empty() {
                let dir = self.cache.tmp_path("base");
                self.tmp_dirs.push(dir.clone());
                let (ctl, r) = (self.ctl.clone(), base.name.clone());
                let r = base.reference.clone().unwrap_or(r);
                let b = blocking(move || -> Result<oci::BaseImage> {
                    ctl.images().export_layout(&r, &dir)?;
                    oci::read_layout(&dir).map_err(|e| step_error(0, e))
                })
                .await??;
                Some(Arc::new(b))
            } else {
                None
            };
            Stage {
                name: None,
                // Keys are per tenant: a step's result depends on more than
                // its text (the network a RUN reached), so one tenant's
                // layers are never another's cache hits.
                key: cache::key("", &["FROM", &base.id, self.tenant]),
                config: base_config(&base),
                base,
                layers: Vec::new(),
                history: Vec::new(),
                args: Vars::new(),
                cmd_set: false,
                image: None,
                base_oci,
            }
        };
        stage.name = def.name.clone();
        // Global ARGs stay visible to ARG lines without a value.
        self.hit_or_put(index, &mut stage, &[]).await?;
        self.emit(BuildEvent::StepDone {
            index,
            layer: None,
            duration_ms: t0.elapsed().as_millis() as u64,
        })
        .await;
        for ins in &def.steps {
            let index = self.next_index();
            self.check_cancelled(index)?;
            let t0 = Instant::now();
            self.emit(BuildEvent::Step {
                index,
                count: self.count,
                text: ins.text(),
            })
            .await;
            let layer = self
                .step(defs, i, ins, index, &mut stage, global_args, built)
                .await?;
            self.emit(BuildEvent::StepDone {
                index,
                layer,
                duration_ms: t0.elapsed().as_millis() as u64,
            })
            .await;
        }
        Ok(stage)
    }

    /// Variables for expansion: ARGs, then ENV over them.
    fn vars(stage: &Stage) -> Vars {
        let mut v = stage.args.clone();
        v.extend(stage.config.env_map());
        v
    }

    /// Advance the stage's key by `parts`; count a cache hit when the key
    /// is known, else record it (metadata steps and FROM).
    async fn hit_or_put(&mut self, index: usize, stage: &mut Stage, parts: &[&str]) -> Result<()> {
        if !parts.is_empty() {
            stage.key = cache::key(&stage.key, parts);
        }
        if !self.req.no_cache && self.cache.get(&stage.key).is_some() {
            self.cached += 1;
            self.emit(BuildEvent::Cached { index }).await;
        } else {
            self.cache
                .put(&stage.key, &Entry::default())
                .map_err(|e| step_error(index, e))?;
        }
        Ok(())
    }

    fn history(stage: &mut Stage, ins: &Instruction, empty: bool) {
        stage.history.push(History {
            created_by: ins.text(),
            empty_layer: empty,
            comment: Some("dwell build".into()),
        });
    }

    #[allow(clippy::too_many_arguments)]
    async fn step(
        &mut self,
        defs: &[StageDef],
        si: usize,
        ins: &Instruction,
        index: usize,
        stage: &mut Stage,
        global_args: &Vars,
        built: &BTreeMap<usize, Stage>,
    ) -> Result<Option<String>> {
        let vars = Self::vars(stage);
        let bad = |m: String| invalid(index, format!("{}: {m}", ins.keyword));
        let text: String;
        match ins.keyword.as_str() {
            "RUN" => return self.run_step(ins, index, stage).await,
            "COPY" | "ADD" => return self.copy_step(defs, si, ins, index, stage, built).await,
            "ARG" => {
                let mut shown = Vec::new();
                for (k, v) in pairs(&ins.args, &vars, false).map_err(bad)? {
                    let val = self
                        .req
                        .build_args
                        .get(&k)
                        .cloned()
                        .or(v)
                        .or_else(|| global_args.get(&k).cloned())
                        .unwrap_or_default();
                    shown.push(format!("{k}={val}"));
                    stage.args.insert(k, val);
                }
                text = format!("ARG {}", shown.join(" "));
                check_vars_size(stage).map_err(bad)?;
            }
            "ENV" => {
                let mut shown = Vec::new();
                for (k, v) in pairs(&ins.args, &vars, true).map_err(bad)? {
                    let v = v.ok_or_else(|| bad(format!("{k} has no value; write {k}=VALUE")))?;
                    stage.config.env_set(&k, &v);
                    shown.push(format!("{k}={v}"));
                }
                text = format!("ENV {}", shown.join(" "));
                check_vars_size(stage).map_err(bad)?;
            }
            "LABEL" | "MAINTAINER" => {
                let list = if ins.keyword == "MAINTAINER" {
                    vec![("maintainer".to_string(), Some(ins.args.trim().to_string()))]
                } else {
                    pairs(&ins.args, &vars, false).map_err(bad)?
                };
                let mut shown = Vec::new();
                for (k, v) in list {
                    let v = v.ok_or_else(|| bad(format!("{k} has no value; write {k}=VALUE")))?;
                    shown.push(format!("{k}={v}"));
                    stage.config.labels.insert(k, v);
                }
                text = format!("LABEL {}", shown.join(" "));
                check_vars_size(stage).map_err(bad)?;
            }
            "EXPOSE" => {
                let mut shown = Vec::new();
                for w in words(&ins.args, &vars, true).map_err(bad)? {
                    let (port, proto) = match w.split_once('/') {
                        Some((p, pr)) => (p.to_string(), pr.to_ascii_lowercase()),
                        None => (w.clone(), "tcp".to_string()),
                    };
                    if port.parse::<u16>().map_or(true, |p| p == 0)
                        || !matches!(proto.as_str(), "tcp" | "udp" | "sctp")
                    {
                        return Err(bad(format!("{w:?} is not PORT or PORT/tcp|udp")));
                    }
                    let k = format!("{port}/{proto}");
                    shown.push(k.clone());
                    stage.config.exposed_ports.insert(k, serde_json::json!({}));
                }
                text = format!("EXPOSE {}", shown.join(" "));
            }
            "WORKDIR" => {
                let w = words(&ins.args, &vars, true).map_err(bad)?.join(" ");
                let path = if w.starts_with('/') {
                    PathBuf::from(&w)
                } else {
                    Path::new(if stage.config.workdir.is_empty() {
                        "/"
                    } else {
                        &stage.config.workdir
                    })
                    .join(&w)
                };
                let clean = format!("/{}", dwell_build::ignore::clean(&path.to_string_lossy()));
                stage.config.workdir = clean.clone();
                return self.workdir_step(ins, index, stage, &clean).await;
            }
            "USER" => {
                let u = words(&ins.args, &vars, true).map_err(bad)?.join("");
                stage.config.user = u.clone();
                text = format!("USER {u}");
            }
            "CMD" | "ENTRYPOINT" => {
                let argv = match ins.form().map_err(|e| step_error(index, e.into()))? {
                    Form::Exec(v) => v,
                    Form::Shell(s) => {
                        let mut v = stage.config.shell();
                        v.push(s);
                        v
                    }
                };
                text = format!(
                    "{} {}",
                    ins.keyword,
                    serde_json::to_string(&argv).unwrap_or_default()
                );
                if ins.keyword == "CMD" {
                    stage.config.cmd = Some(argv);
                    stage.cmd_set = true;
                } else {
                    stage.config.entrypoint = Some(argv);
                    if !stage.cmd_set {
                        stage.config.cmd = None;
                    }
                }
            }
            "SHELL" => {
                let Ok(Form::Exec(v)) = ins.form() else {
                    return Err(bad("needs a JSON array".into()));
                };
                text = format!("SHELL {}", serde_json::to_string(&v).unwrap_or_default());
                stage.config.shell = v;
            }
            "HEALTHCHECK" => {
                let a = ins.args.trim();
                if a.eq_ignore_ascii_case("NONE") {
                    stage.config.healthcheck = Some(Health {
                        test: vec!["NONE".into()],
                        ..Default::default()
                    });
                } else {
                    let cmd = a[3..].trim_start();
                    let test = match serde_json::from_str::<Vec<String>>(cmd) {
                        Ok(v) if cmd.starts_with('[') => {
                            let mut t = vec!["CMD".to_string()];
                            t.extend(v);
                            t
                        }
                        _ => vec!["CMD-SHELL".to_string(), cmd.to_string()],
                    };
                    let dur = |k: &str| -> Result<Option<u64>> {
                        ins.flag(k)
                            .map(|v| duration_ns(v).map_err(|m| bad(format!("--{k}: {m}"))))
                            .transpose()
                    };
                    stage.config.healthcheck = Some(Health {
                        test,
                        interval: dur("interval")?,
                        timeout: dur("timeout")?,
                        start_period: dur("start-period")?,
                        retries: ins
                            .flag("retries")
                            .map(|r| {
                                r.parse()
                                    .map_err(|_| bad(format!("--retries={r} is not a number")))
                            })
                            .transpose()?,
                    });
                }
                text = ins.text();
            }
            "STOPSIGNAL" => {
                let s = words(&ins.args, &vars, true).map_err(bad)?.join("");
                stage.config.stop_signal = Some(s.clone());
                text = format!("STOPSIGNAL {s}");
            }
            "VOLUME" => {
                let list = match ins.form() {
                    Ok(Form::Exec(v)) => v,
                    _ => words(&ins.args, &vars, true).map_err(bad)?,
                };
                for v in &list {
                    stage
                        .config
                        .volumes
                        .insert(v.clone(), serde_json::json!({}));
                }
                text = format!("VOLUME {}", list.join(" "));
            }
            other => return Err(bad(format!("{other} is not supported"))),
        }
        self.hit_or_put(index, stage, &[&text]).await?;
        Self::history(stage, ins, true);
        Ok(None)
    }

    /// The image of the stage's current layers (imported once per layer
    /// count, as an intermediate image removed when the build ends).
    async fn materialize(&mut self, stage: &mut Stage) -> Result<Image> {
        if stage.layers.is_empty() {
            return Ok(stage.base.clone());
        }
        if let Some((n, img)) = &stage.image {
            if *n == stage.layers.len() {
                return Ok(img.clone());
            }
        }
        let name = format!("{TMP_IMAGE_PREFIX}{}", dwell_build::nonce());
        self.tmp_images.push(name.clone());
        let (cfg, layers, base) = stage.parts();
        let (ctl, cache) = (self.ctl.clone(), self.cache.clone());
        let n = name.clone();
        let tenant = self.tenant.to_string();
        let img = blocking(move || -> Result<Image> {
            let dir = cache.tmp_path("layout");
            let r = oci::write_layout(&dir, &cfg, &layers)
                .map_err(|e| step_error(0, e))
                .and_then(|_| {
                    Ok(ctl
                        .images()
                        .import_over(&n, &dir, &base, false, Some(vec![tenant]))?)
                });
            let _ = std::fs::remove_dir_all(&dir);
            r
        })
        .await??;
        stage.image = Some((stage.layers.len(), img.clone()));
        Ok(img)
    }

    fn limits(&self) -> Limits {
        Limits {
            bytes: self.disk_bytes,
            entries: MAX_ENTRIES,
        }
    }

    /// Record a new layer (or none) for the stage's current key.
    fn add_layer(
        &self,
        stage: &mut Stage,
        index: usize,
        l: Option<Layer>,
    ) -> Result<Option<String>> {
        self.cache
            .put(
                &stage.key,
                &Entry {
                    layer: l
                        .as_ref()
                        .map(|l| (l.digest.clone(), l.diff_id.clone(), l.size)),
                },
            )
            .map_err(|e| step_error(index, e))?;
        Ok(self.push_layer(stage, l))
    }

    fn push_layer(&self, stage: &mut Stage, l: Option<Layer>) -> Option<String> {
        let d = l.as_ref().map(|l| format!("sha256:{}", l.digest));
        if let Some(l) = l {
            stage.layers.push(l);
        }
        d
    }

    /// A cache hit for the stage's current key: its layer pushed.
    async fn try_hit(
        &mut self,
        index: usize,
        stage: &mut Stage,
        ins: &Instruction,
    ) -> Option<Option<String>> {
        if self.req.no_cache {
            return None;
        }
        let e = self.cache.get(&stage.key)?;
        self.cached += 1;
        self.emit(BuildEvent::Cached { index }).await;
        let l = self.cache.layer(&e);
        Self::history(stage, ins, l.is_none());
        Some(self.push_layer(stage, l))
    }

    async fn workdir_step(
        &mut self,
        ins: &Instruction,
        index: usize,
        stage: &mut Stage,
        dir: &str,
    ) -> Result<Option<String>> {
        stage.key = cache::key(&stage.key, &["WORKDIR", dir]);
        if let Some(d) = self.try_hit(index, stage, ins).await {
            return Ok(d);
        }
        let img = self.materialize(stage).await?;
        let (cache, limits, dir) = (self.cache.clone(), self.limits(), dir.to_string());
        let blob = blocking(move || -> std::result::Result<Option<Layer>, BuildError> {
            let tree = Tree::image(&img.layers, &img.host_dirs)?;
            let rel = PathBuf::from(dwell_build::ignore::clean(&dir));
            if rel.as_os_str().is_empty() || tree.stat(&rel)?.is_some() {
                return Ok(None);
            }
            let path = cache.tmp_path("layer");
            let mut w = LayerWriter::create(&path, limits)?;
            let mut done = BTreeSet::new();
            copy::parents(&tree, &rel, &mut done, &mut w)?;
            w.dir(
                &rel,
                layer::Meta {
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                    mtime: 0,
                },
            )?;
            let b = w.finish()?;
            Ok(Some(cache.keep(&b)?))
        })
        .await?
        .map_err(|e| step_error(index, e))?;
        Self::history(stage, ins, blob.is_none());
        self.add_layer(stage, index, blob)
    }

    async fn copy_step(
        &mut self,
        defs: &[StageDef],
        si: usize,
        ins: &Instruction,
        index: usize,
        stage: &mut Stage,
        built: &BTreeMap<usize, Stage>,
    ) -> Result<Option<String>> {
        let vars = Self::vars(stage);
        let bad = |m: String| invalid(index, format!("{}: {m}", ins.keyword));
        let mut w = match ins.form() {
            Ok(Form::Exec(v)) => v,
            _ => words(&ins.args, &vars, true).map_err(bad)?,
        };
        if w.len() < 2 {
            return Err(bad("needs at least one source and a destination".into()));
        }
        let Some(dest) = w.pop() else {
            return Err(bad("needs at least one source and a destination".into()));
        };
        let dest = if dest.starts_with('/') {
            dest
        } else {
            let wd = if stage.config.workdir.is_empty() {
                "/".to_string()
            } else {
                stage.config.workdir.clone()
            };
            let trailing = dest.ends_with('/') || dest == ".";
            let mut d = Path::new(&wd).join(&dest).to_string_lossy().into_owned();
            if trailing && !d.ends_with('/') {
                d.push('/');
            }
            d
        };
        let chmod = match ins.flag("chmod") {
            Some(m) => Some(
                u32::from_str_radix(m, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| bad(format!("--chmod={m} is not an octal mode like 755")))?,
            ),
            None => None,
        };
        let from = ins.flag("from").map(str::to_string);
        // --from: an earlier stage, else an image this tenant may use.
        let src_img =
            match &from {
                Some(f) => match stage_ref(defs, si, f) {
                    Some(j) => {
                        let mut s = built.get(&j).cloned().ok_or_else(|| {
                            bad(format!(
                                "--from={f}: stage {j} was not built before this one"
                            ))
                        })?;
                        Some((self.materialize(&mut s).await?, s.key.clone()))
                    }
                    None => {
                        let pinned = self.ctl.image_for_create(self.tenant, f).await.map_err(
                            |e| match e {
                                Error::Storage(dwell_storage::StorageError::ImageNotFound(_)) => {
                                    bad(format!(
                                        "--from={f}: no earlier stage has that name or index, and \
                                     no image you may use has that name"
                                    ))
                                }
                                e => e,
                            },
                        )?;
                        let ctl = self.ctl.clone();
                        let i = blocking(move || ctl.images().get(&pinned)).await??;
                        let key = format!("image {}", i.id);
                        Some((i, key))
                    }
                },
                None => None,
            };
        let from_context = src_img.is_none();
        let img = self.materialize(stage).await?;
        let args = CopyArgs {
            srcs: w.clone(),
            dest: dest.clone(),
            chown: None,
            chmod,
            add: ins.keyword == "ADD",
            from_context,
        };
        let chown = ins.flag("chown").map(str::to_string);
        let ctx = self.req.context_dir.clone();
        let ignore = self.ignore.clone();
        let (cache, limits) = (self.cache.clone(), self.limits());
        let parent_key = stage.key.clone();
        let no_cache = self.req.no_cache;
        let text = format!(
            "{} {:?} {:?} {:?} {:?} {}",
            ins.keyword,
            w,
            dest,
            chown,
            chmod,
            src_img
                .as_ref()
                .map(|(_, k)| k.as_str())
                .unwrap_or("context")
        );
        // Plan, hash, and on a miss write the layer, all off the runtime.
        let res = blocking(
            move || -> std::result::Result<(String, bool, Option<Layer>), BuildError> {
                let image_tree = Tree::image(&img.layers, &img.host_dirs)?;
                let src_tree = match &src_img {
                    Some((i, _)) => Tree::image(&i.layers, &i.host_dirs)?,
                    None => Tree::dir(&ctx)?,
                };
                let mut args = args;
                if let Some(c) = &chown {
                    args.chown = Some(copy::chown(c, &image_tree)?);
                }
                let ign = if args.from_context {
                    ignore.as_ref()
                } else {
                    None
                };
                let items = copy::plan(&src_tree, &image_tree, &args, ign)?;
                if let Some(p) = items.iter().find_map(|it| image_tree.in_host_dir(&it.dest)) {
                    return Err(BuildError::Invalid(format!(
                        "the destination is under /{}, which images built on host share \
                         read-only from the host; copy elsewhere (e.g. /opt)",
                        p.display()
                    )));
                }
                let h = if args.from_context {
                    copy::hash(&items, &args)?
                } else {
                    String::new()
                };
                let key = cache::key(&parent_key, &[&text, &h]);
                if !no_cache && cache.get(&key).is_some() {
                    return Ok((key, true, None));
                }
                let path = cache.tmp_path("layer");
                let mut lw = LayerWriter::create(&path, limits)?;
                let r = copy::write(&items, &image_tree, &args, &mut lw);
                if let Err(e) = r {
                    let _ = std::fs::remove_file(&path);
                    return Err(e);
                }
                let b = lw.finish()?;
                Ok((key, false, Some(cache.keep(&b)?)))
            },
        )
        .await?
        .map_err(|e| step_error(index, e))?;
        let (key, hit, layer) = res;
        stage.key = key;
        if hit {
            if let Some(d) = self.try_hit(index, stage, ins).await {
                return Ok(d);
            }
        }
        Self::history(stage, ins, layer.is_none());
        self.add_layer(stage, index, layer)
    }

    async fn run_step(
        &mut self,
        ins: &Instruction,
        index: usize,
        stage: &mut Stage,
    ) -> Result<Option<String>> {
        let form = ins.form().map_err(|e| step_error(index, e.into()))?;
        let argv = match form {
            Form::Exec(v) => {
                if v.is_empty() {
                    return Err(invalid(index, "RUN: the exec form needs a program"));
                }
                v
            }
            Form::Shell(s) => {
                let script = match ins.heredocs.as_slice() {
                    [h] if s.trim() == format!("<<{}", h.word)
                        || s.trim() == format!("<<-{}", h.word)
                        || s.trim() == format!("<<\"{}\"", h.word)
                        || s.trim() == format!("<<'{}'", h.word) =>
                    {
                        h.body.clone()
                    }
                    [] => s,
                    hs => {
                        let mut t = s;
                        for h in hs {
                            t.push('\n');
                            t.push_str(&h.body);
                            t.push_str(&h.word);
                        }
                        t
                    }
                };
                let mut v = stage.config.shell();
                v.push(script);
                v
            }
        };
        let mut env = stage.args.clone();
        env.extend(stage.config.env_map());
        let args_text: Vec<String> = stage.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let argv_json = serde_json::to_string(&argv).unwrap_or_default();
        stage.key = cache::key(&stage.key, &["RUN", &argv_json, &args_text.join("\n")]);
        if let Some(d) = self.try_hit(index, stage, ins).await {
            return Ok(d);
        }
        let img = self.materialize(stage).await?;
        let exec = ExecRequest {
            argv,
            env,
            cwd: (!stage.config.workdir.is_empty()).then(|| stage.config.workdir.clone()),
            user: (!stage.config.user.is_empty()).then(|| stage.config.user.clone()),
            ..Default::default()
        };
        let layer = self.in_sandbox(index, &img, exec).await?;
        Self::history(stage, ins, layer.is_none());
        self.add_layer(stage, index, layer)
    }

    /// Run `exec` in a fresh sandbox on `img`, then capture its changes.
    async fn in_sandbox(
        &mut self,
        index: usize,
        img: &Image,
        exec: ExecRequest,
    ) -> Result<Option<Layer>> {
        let name = format!("build-{}", dwell_build::nonce());
        let create = CreateRequest {
            name: Some(name.clone()),
            image: Some(img.name.clone()),
            mode: Some(Mode::Persistent),
            runtime: self.req.isolation.clone(),
            network: self.req.network,
            allow_out: self.req.allow_out.clone(),
            deny_out: self.req.deny_out.clone(),
            disk: self.req.disk.clone(),
            memory: self.req.memory.clone(),
            labels: [(BUILD_LABEL.to_string(), "run".to_string())].into(),
            ..Default::default()
        };
        let sb = self
            .ctl
            .create(self.tenant, create)
            .await
            .map_err(|e| match e {
                e @ (Error::Quota(_) | Error::Invalid { .. }) => e,
                e => Error::BuildFailed {
                    step: index,
                    exit_code: None,
                    message: format!("step {index}: cannot start the build sandbox: {e}"),
                    status: e.status().max(422),
                },
            })?;
        self.sandboxes.push(sb.id.clone());
        // One layer holds at most what the sandbox's disk can.
        self.disk_bytes = sb.spec.disk_bytes;
        let (_, client) = self.ctl.agent_for(self.tenant, &sb.id, "build").await?;
        // A command the agent refuses to start (its USER is not in the
        // image, its workdir cannot be made) fails this step, named.
        let mut stream = client.exec(exec).await.map_err(|e| Error::BuildFailed {
            step: index,
            exit_code: None,
            message: format!("step {index}: cannot start the RUN command: {e}"),
            status: 422,
        })?;
        let mut status = None;
        loop {
            // A caller that dropped its receiver cancelled the build: the
            // command is killed (dropping the stream) and cleanup runs.
            let ev = tokio::select! {
                ev = stream.next() => ev,
                _ = self.events.closed() => return Err(cancelled(index)),
            };
            let Some(ev) = ev else { break };
            match ev {
                ProcessEvent::Started { .. } => {}
                ProcessEvent::Stdout(b) => {
                    self.emit(BuildEvent::Output {
                        index,
                        stream: Stream::Stdout,
                        text: String::from_utf8_lossy(&b).into_owned(),
                    })
                    .await
                }
                ProcessEvent::Stderr(b) => {
                    self.emit(BuildEvent::Output {
                        index,
                        stream: Stream::Stderr,
                        text: String::from_utf8_lossy(&b).into_owned(),
                    })
                    .await
                }
                ProcessEvent::Exit(s) => status = Some(s),
            }
        }
        let status = match (status, stream.error()) {
            (Some(s), _) => s,
            (None, Some(e)) => {
                return Err(Error::BuildFailed {
                    step: index,
                    exit_code: None,
                    message: format!("step {index}: the RUN command's stream broke: {e}"),
                    status: 422,
                })
            }
            (None, None) => {
                return Err(Error::Internal(format!(
                    "step {index}: the RUN command ended without an exit status"
                )))
            }
        };
        if !status.success() {
            let how = match (status.code, status.signal) {
                (Some(c), _) => format!("exited with code {c}"),
                (None, Some(s)) => format!("was killed by signal {s}"),
                _ => "failed".to_string(),
            };
            return Err(Error::BuildFailed {
                step: index,
                exit_code: status.code.or(status.signal.map(|s| 128 + s)),
                message: format!("step {index}: the RUN command {how}"),
                status: 422,
            });
        }
        // Stopped: nothing writes the upper dir while it is read.
        self.ctl.stop(self.tenant, &sb.id).await?;
        let (inner, cache, limits, image, id) = (
            self.ctl.inner.clone(),
            self.cache.clone(),
            self.limits(),
            img.clone(),
            sb.id.clone(),
        );
        let captured = blocking(move || -> Result<(Option<Layer>, Vec<String>)> {
            let root = inner.volumes.mount(&id)?;
            let overlays = crate::diff::layers(&image, &root);
            let mut out = Ok((None, Vec::new()));
            for o in &overlays {
                if o.at != Path::new("/") {
                    if let Some(first) =
                        layer::first_entry(&o.upper).map_err(|e| step_error(index, e))?
                    {
                        out = Err(step_error(
                            index,
                            BuildError::Refused(format!(
                                "the step changed {} ({first}), which images built on host \
                                 share read-only from the host; install into /opt or another \
                                 directory instead",
                                o.at.display()
                            )),
                        ));
                        break;
                    }
                }
            }
            if out.is_ok() {
                if let Some(o) = overlays.iter().find(|o| o.at == Path::new("/")) {
                    out = capture(&cache, &o.upper, limits).map_err(|e| step_error(index, e));
                }
            }
            let _ = inner.volumes.unmount(&id);
            out
        })
        .await??;
        let (layer, skipped) = captured;
        for s in skipped {
            self.emit(BuildEvent::Warning {
                index,
                message: format!(
                    "left out of the layer: {s} (device nodes and sockets are not kept)"
                ),
            })
            .await;
        }
        self.remove_sandbox(&sb.id).await;
        Ok(layer)
    }

    async fn remove_sandbox(&mut self, id: &str) {
        if let Err(e) = self.ctl.delete(self.tenant, id, true).await {
            tracing::warn!(sandbox = id, "removing a build sandbox failed: {e}");
        } else {
            self.sandboxes.retain(|s| s != id);
        }
    }

    /// A tag is this tenant's to move only when the image under it is its
    /// own (another tenant's, or one every tenant shares, stays). Checked
    /// before any step runs and again before the result is stored.
    async fn check_tags(&self) -> Result<()> {
        for t in &self.req.tags {
            let (ctl, t2) = (self.ctl.clone(), t.clone());
            let existing = blocking(move || ctl.images().lookup(&t2)).await??;
            if let Some(old) = existing {
                if old.tenants.as_deref() != Some(&[self.tenant.to_string()][..]) {
                    return Err(Error::Conflict(format!(
                        "the image name {t} is taken by an image this build may not replace \
                         (another tenant's, or shared with every tenant); build under another tag"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The final image, under each tag.
    async fn finish(&mut self, mut stage: Stage) -> Result<BuildOutput> {
        let (cfg, layers, base) = stage.parts();
        let digest = format!("sha256:{}", dwell_build::sha256_hex(&cfg));
        self.check_tags().await?;
        let (ctl, cache, tags) = (self.ctl.clone(), self.cache.clone(), self.req.tags.clone());
        let tenant = self.tenant.to_string();
        let image = blocking(move || -> Result<Image> {
            let dir = cache.tmp_path("layout");
            let r = (|| -> Result<Image> {
                oci::write_layout(&dir, &cfg, &layers).map_err(|e| step_error(0, e))?;
                let mut first = None;
                for t in &tags {
                    let img = ctl.images().import_over(
                        t,
                        &dir,
                        &base,
                        true,
                        Some(vec![tenant.clone()]),
                    )?;
                    first.get_or_insert(img);
                }
                Ok(first.expect("at least one tag"))
            })();
            let _ = std::fs::remove_dir_all(&dir);
            r
        })
        .await??;
        stage.image = None;
        Ok(BuildOutput {
            image,
            digest,
            steps: self.steps,
            cached: self.cached,
        })
    }

    /// Remove the build's sandboxes and intermediate images.
    async fn cleanup(&mut self) {
        for id in self.sandboxes.clone() {
            self.remove_sandbox(&id).await;
        }
        let (ctl, names) = (self.ctl.clone(), std::mem::take(&mut self.tmp_images));
        let dirs = std::mem::take(&mut self.tmp_dirs);
        let _ = blocking(move || {
            for d in dirs {
                let _ = std::fs::remove_dir_all(d);
            }
            for n in names {
                if let Err(e) = ctl.images().remove(&n) {
                    tracing::warn!(
                        image = n,
                        "removing an intermediate build image failed: {e}"
                    );
                }
            }
        })
        .await;
    }
}

impl Controller {
    /// Drop the build cache (for `image prune`). Waits for running builds
    /// at most [`PRUNE_WAIT`], then fails with a 409 (a build may run for
    /// hours). Returns the bytes freed.
    pub async fn prune_build_cache(&self) -> Result<u64> {
        let root = self.inner.images.root().to_path_buf();
        blocking(move || cache::prune(&root, PRUNE_WAIT))
            .await?
            .map_err(|e| match e {
                BuildError::Io { err, .. } if err.kind() == std::io::ErrorKind::WouldBlock => {
                    Error::Conflict(
                        "a build is running, so the build cache cannot be pruned now; nothing \
                         was pruned: run image prune again when the builds finish (or cancel them)"
                            .into(),
                    )
                }
                e => Error::Internal(format!("pruning the build cache: {e}")),
            })
    }
}

/// Capture the upper dir `upper` into a cached layer; `None` when the
/// step changed nothing.
fn capture(
    cache: &Cache,
    upper: &Path,
    limits: Limits,
) -> std::result::Result<(Option<Layer>, Vec<String>), BuildError> {
    let b = match dwell_hostfs::Beneath::open(upper) {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Ok((None, Vec::new())),
        Err(e) => return Err(BuildError::Refused(e.to_string())),
    };
    let path = cache.tmp_path("layer");
    let mut w = LayerWriter::create(&path, limits)?;
    if let Err(e) = layer::capture(&b, &mut w) {
        drop(w);
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    let blob = w.finish()?;
    if blob.entries == 0 {
        let _ = std::fs::remove_file(&path);
        return Ok((None, blob.skipped));
    }
    let skipped = blob.skipped.clone();
    Ok((Some(cache.keep(&blob)?), skipped))
}
