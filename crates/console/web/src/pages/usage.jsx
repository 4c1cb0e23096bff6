// Usage and cost over time, per tenant, as charts (uPlot), and each tenant's
// quota against what it holds. `GET /v1/usage/series` gives the metered
// usage per tenant in hourly or daily (UTC) buckets; `GET /v1/usage` the
// same window per sandbox; quotas come from `GET /v1/tenants` (an admin's
// view of every tenant) or `GET /v1/tenants/{name}` (a tenant's own).
// Loaded on demand, with uPlot.
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import uPlot from "uplot";
import uplotCss from "uplot/dist/uPlot.min.css" with { type: "text" };
import { actFor, get } from "../api.js";
import { bytes, time, usePoll, ErrorBox, Empty, Loading } from "../ui.jsx";
import { injectCss } from "./inject-css.js";

const HOUR = 3600 * 1000;
const DAY = 24 * HOUR;

const RANGES = {
  "24h": { label: "Last 24 hours, hourly", n: 24, step: "hour" },
  "7d": { label: "Last 7 days, daily", n: 7, step: "day" },
  "30d": { label: "Last 30 days, daily", n: 30, step: "day" },
};

const METRICS = [
  { key: "vcpu_hours", title: "vCPU-hours", unit: "vCPU·h", digits: 3 },
  { key: "memory_gib_hours", title: "Memory GiB-hours", unit: "GiB·h", digits: 3 },
  { key: "storage_gib_hours", title: "Storage GiB-hours", unit: "GiB·h", digits: 3 },
  { key: "cost_usd", title: "Cost", unit: "USD", digits: 4, money: true },
];

const PALETTE = ["#0b5fff", "#1b7f3b", "#a15c00", "#c62828", "#7b1fa2", "#00838f", "#5d4037", "#546e7a"];

/** Bucket starts (Unix ms, oldest first): whole UTC hours or days, as the
 * daemon buckets them. */
function boundaries(range, now = Date.now()) {
  const { n, step } = RANGES[range];
  const ms = step === "hour" ? HOUR : DAY;
  const last = Math.floor(now / ms) * ms;
  return Array.from({ length: n }, (_, i) => last - (n - 1 - i) * ms);
}

/** The tenant the page reports on: `undefined` = every tenant (an admin's own view). */
function scopeOf(session, chosen) {
  if (actFor()) return actFor();
  if (!session.admin) return session.tenant;
  return chosen || undefined;
}

function fmt(v, m) {
  if (m.money) return `$${v.toFixed(v >= 100 ? 2 : m.digits)}`;
  return v >= 100 ? v.toFixed(1) : v.toFixed(m.digits);
}

/** A price per hour: `$0.0167`, `$0.000137`. */
function price(v) {
  return `$${Number(v).toPrecision(3).replace(/\.?0+$/, "")}`;
}

function cssVar(name, fallback) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
}

/** One uPlot chart of a metric per bucket, a series per tenant. */
function Chart({ metric, xs, series, step }) {
  const box = useRef(null);
  const plot = useRef(null);
  useEffect(() => {
    const el = box.current;
    const fg = cssVar("--fg", "#1b1f24");
    const grid = cssVar("--line", "#d5d9de");
    const names = Object.keys(series);
    const one = names.length === 1;
    const opts = {
      width: Math.max(260, el.clientWidth),
      height: 220,
      title: metric.title,
      legend: { show: true },
      cursor: { drag: { x: false, y: false } },
      scales: {
        // Room after the last bucket: a bar starts at its bucket's start.
        x: { time: true, range: (u, min, max) => [min, max + (step === "hour" ? HOUR : DAY) / 1000] },
        y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] },
      },
      axes: [
        { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid } },
        {
          stroke: fg,
          grid: { stroke: grid, width: 1 },
          ticks: { stroke: grid },
          // Wide enough for the longest label.
          size: (u, values) => 16 + 8 * Math.max(3, ...(values || []).map((v) => String(v).length)),
          values: (u, vals) => vals.map((v) => (metric.money ? `$${v}` : `${v}`)),
        },
      ],
      series: [
        { label: step === "hour" ? "Hour" : "Day", value: (u, v) => (v == null ? "–" : new Date(v * 1000).toLocaleString()) },
        ...names.map((t, i) => ({
          label: t,
          stroke: PALETTE[i % PALETTE.length],
          fill: one ? `${PALETTE[0]}55` : undefined,
          width: one ? 1 : 2,
          paths: one ? uPlot.paths.bars({ size: [0.7, 60], align: 1 }) : undefined,
          points: { show: !one },
          value: (u, v) => (v == null ? "–" : `${fmt(v, metric)} ${metric.money ? "" : metric.unit}`),
        })),
      ],
    };
    // uPlot takes seconds on a time axis.
    const data = [xs.map((x) => x / 1000), ...names.map((t) => series[t])];
    const u = new uPlot(opts, data, el);
    plot.current = u;
    const ro = new ResizeObserver(() => u.setSize({ width: Math.max(260, el.clientWidth), height: 220 }));
    ro.observe(el);
    return () => {
      ro.disconnect();
      u.destroy();
    };
  }, [metric, xs, series, step]);
  const total = Object.values(series).reduce((a, s) => a + s.reduce((x, y) => x + y, 0), 0);
  return (
    <figure class="usage-chart" data-testid={`chart-${metric.key}`}>
      <div ref={box} role="img" aria-label={`${metric.title} per ${step}: ${fmt(total, metric)} ${metric.unit} in all`} />
    </figure>
  );
}

/** A quota bar: what is held against the limit (`null`: unlimited). */
function Bar({ label, held, limit, show }) {
  const pct = limit ? Math.min(100, (held / limit) * 100) : 0;
  const level = pct >= 90 ? "high" : pct >= 70 ? "mid" : "low";
  const text = limit == null ? `${show(held)} (no limit)` : `${show(held)} of ${show(limit)}`;
  return (
    <div class="quota">
      <div class="quota-label">
        <span>{label}</span>
        <span>{text}</span>
      </div>
      <div
        class={`quota-bar quota-${limit == null ? "none" : level}`}
        role="meter"
        aria-label={label}
        aria-valuemin={0}
        aria-valuemax={limit ?? undefined}
        aria-valuenow={held}
        aria-valuetext={text}
      >
        <span style={{ width: `${limit == null ? 0 : pct}%` }} />
      </div>
    </div>
  );
}

function Quotas({ session }) {
  // An admin's own view lists every tenant; a tenant (or an admin acting
  // for one) reads its own.
  const own = !session.admin || actFor();
  const name = actFor() || session.tenant;
  const { data, error, loading } = usePoll(
    () => (own ? get(`/v1/tenants/${encodeURIComponent(name)}`).then((t) => [t]) : get("/v1/tenants")),
    [own, name],
    10000
  );
  if (error) return <ErrorBox error={error} title="Cannot read the quotas" />;
  if (loading && !data) return <Loading what="quotas" />;
  const list = data || [];
  if (!list.length) return <Empty>No tenants yet.</Empty>;
  const num = (v) => String(Number.isInteger(v) ? v : +v.toFixed(2));
  return (
    <div class="quota-grid">
      {list.map((t) => (
        <section class="quota-card" data-testid="quota" data-tenant={t.name} aria-label={`Quota of ${t.name}`}>
          <h3>
            {t.name}
            {t.default_quota ? <span class="hint"> (daemon's default quota)</span> : null}
          </h3>
          <Bar label="Sandboxes" held={t.held.sandboxes} limit={t.max_sandboxes} show={num} />
          <Bar label="vCPUs" held={t.held.vcpus} limit={t.max_vcpus} show={num} />
          <Bar label="Memory" held={t.held.memory} limit={t.max_memory} show={bytes} />
          <Bar label="Storage" held={t.held.storage} limit={t.max_storage} show={bytes} />
        </section>
      ))}
    </div>
  );
}

export default function UsagePage({ session }) {
  injectCss("uplot", uplotCss);
  const [range, setRange] = useState("7d");
  const [chosen, setChosen] = useState("");
  const scope = scopeOf(session, chosen);
  const picking = session.admin && !actFor();

  const load = async () => {
    const bs = boundaries(range);
    const step = RANGES[range].step;
    const until = bs[bs.length - 1] + (step === "hour" ? HOUR : DAY);
    const [series, report] = await Promise.all([
      get("/v1/usage/series", { since: bs[0], until, step, tenant: scope }),
      get("/v1/usage", { since: bs[0], tenant: scope }),
    ]);
    return { bs, series, report, at: Date.now() };
  };
  const { data, error, loading, reload } = usePoll(load, [range, scope], 60000);

  const view = useMemo(() => {
    if (!data) return null;
    const index = new Map(data.bs.map((b, i) => [b, i]));
    const tenants = Array.from(new Set(data.series.points.map((p) => p.tenant))).sort();
    const per = {};
    for (const m of METRICS) {
      per[m.key] = {};
      for (const t of tenants) per[m.key][t] = data.bs.map(() => 0);
    }
    for (const p of data.series.points) {
      const i = index.get(p.start);
      if (i === undefined) continue;
      for (const m of METRICS) per[m.key][p.tenant][i] += p[m.key] || 0;
    }
    return { tenants, per, first: { ...data.report, prices: data.series.prices || data.report.prices } };
  }, [data]);

  const tenantOptions = view ? view.tenants : [];
  const step = RANGES[range].step;
  return (
    <section class="usage-page">
      <h1>Usage</h1>
      <div class="usage-tools">
        <label>
          Period{" "}
          <select value={range} onChange={(e) => setRange(e.currentTarget.value)} data-testid="usage-range">
            {Object.entries(RANGES).map(([k, r]) => (
              <option value={k}>{r.label}</option>
            ))}
          </select>
        </label>
        {picking ? (
          <label>
            Tenant{" "}
            <select value={chosen} onChange={(e) => setChosen(e.currentTarget.value)} data-testid="usage-tenant">
              <option value="">All tenants</option>
              {Array.from(new Set([...tenantOptions, chosen].filter(Boolean))).map((t) => (
                <option value={t}>{t}</option>
              ))}
            </select>
          </label>
        ) : (
          <span>
            Tenant <strong>{scope}</strong>
          </span>
        )}
        <button type="button" onClick={reload} disabled={loading}>
          Refresh
        </button>
        <span class="hint" aria-live="polite">
          {loading ? "Loading…" : data ? `As of ${time(data.at)}` : ""}
        </span>
      </div>
      <ErrorBox error={error} title="Cannot read the usage" />
      {loading && !data ? <Loading what="usage" /> : null}
      {view && view.tenants.length === 0 ? (
        <Empty>No usage recorded in this period. Sandboxes are metered while they hold resources.</Empty>
      ) : null}
      {view && view.tenants.length > 0 ? (
        <>
          <div class="usage-charts">
            {METRICS.map((m) => (
              <Chart metric={m} xs={data.bs} series={view.per[m.key]} step={step} />
            ))}
          </div>
          {view.first.prices ? (
            <p class="hint">
              Prices: {price(view.first.prices.vcpu_hour)} per vCPU-hour, {price(view.first.prices.memory_gib_hour)} per
              GiB-hour of memory, {price(view.first.prices.storage_gib_hour)} per GiB-hour of storage. The latest{" "}
              {step} is still filling.
            </p>
          ) : null}
          <h2>By sandbox, {RANGES[range].label.toLowerCase()}</h2>
          <div class="table-wrap">
            <table class="usage-table" data-testid="usage-table">
              <thead>
                <tr>
                  <th scope="col">Sandbox</th>
                  <th scope="col">Tenant</th>
                  <th scope="col" class="num">vCPU-h</th>
                  <th scope="col" class="num">Memory GiB-h</th>
                  <th scope="col" class="num">Storage GiB-h</th>
                  <th scope="col" class="num">CPU used h</th>
                  <th scope="col" class="num">Cost</th>
                </tr>
              </thead>
              <tbody>
                {view.first.sandboxes.map((r) => (
                  <tr>
                    <td>{r.name}</td>
                    <td>{r.tenant}</td>
                    <td class="num">{r.vcpu_hours.toFixed(3)}</td>
                    <td class="num">{r.memory_gib_hours.toFixed(3)}</td>
                    <td class="num">{r.storage_gib_hours.toFixed(3)}</td>
                    <td class="num">{r.cpu_used_hours.toFixed(3)}</td>
                    <td class="num">${r.cost_usd.toFixed(4)}</td>
                  </tr>
                ))}
              </tbody>
              <tfoot>
                <tr>
                  <th scope="row" colSpan={2}>
                    Total
                  </th>
                  <td class="num">{view.first.total.vcpu_hours.toFixed(3)}</td>
                  <td class="num">{view.first.total.memory_gib_hours.toFixed(3)}</td>
                  <td class="num">{view.first.total.storage_gib_hours.toFixed(3)}</td>
                  <td class="num">{view.first.total.cpu_used_hours.toFixed(3)}</td>
                  <td class="num">${view.first.total.cost_usd.toFixed(4)}</td>
                </tr>
              </tfoot>
            </table>
          </div>
        </>
      ) : null}
      <h2>Quotas</h2>
      <Quotas session={session} />
    </section>
  );
}
