//! The OpenAPI document, generated from the handlers' `#[utoipa::path]`
//! attributes and the contract's schemas.

use std::sync::OnceLock;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{
    builds, console, exec, files, hibernate, images, moves, networks, nodes, ports, processes,
    registries, sandboxes, service, snapshots, ssh_keys, tenants, volumes,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "dwell API",
        description = "REST+JSON API of the dwell daemon. Local callers use the unix socket (root only); TCP callers send `Authorization: Bearer <API key>`. An admin (an admin key, or the unix socket) may act for another tenant with the header `X-Dwell-Tenant: <tenant>`: the request runs as that tenant's would (403 for other keys, 404 for an unknown tenant). Every error, a malformed query, path or body included, is `{\"error\":{\"code\",\"message\",\"facts\"}}` with its status (`facts`, named values such as the sandbox and its state, is omitted when empty)."
    ),
    modifiers(&BearerKey),
    security(("apiKey" = [])),
    components(schemas(
        dwell_contract::exec::ClientMsg,
        dwell_contract::exec::ServerMsg,
        dwell_contract::ExecRequest,
    )),
    paths(
        crate::routes::healthz,
        crate::routes::openapi,
        crate::routes::info,
        sandboxes::create,
        sandboxes::list,
        sandboxes::inspect,
        sandboxes::update,
        sandboxes::delete,
        sandboxes::keepalive,
        sandboxes::start,
        sandboxes::stop,
        sandboxes::pause,
        sandboxes::resume,
        hibernate::hibernate,
        ports::expose,
        ports::list,
        ports::get,
        ports::unexpose,
        sandboxes::events,
        sandboxes::stats,
        sandboxes::diff,
        snapshots::create,
        snapshots::restore,
        snapshots::archive,
        snapshots::progress,
        snapshots::gc,
        snapshots::list,
        snapshots::inspect,
        snapshots::delete,
        exec::run,
        exec::stream,
        service::status,
        service::control,
        service::logs,
        processes::list,
        processes::signal,
        processes::attach,
        files::download,
        files::upload,
        files::remove,
        files::list,
        files::stat,
        files::mkdir,
        files::rename,
        images::list,
        images::import,
        builds::build,
        images::remove,
        images::prune,
        images::export,
        images::pull,
        registries::list,
        registries::login,
        registries::logout,
        networks::create,
        networks::list,
        networks::inspect,
        networks::delete,
        networks::connect,
        networks::disconnect,
        volumes::create,
        volumes::list,
        volumes::inspect,
        volumes::resize,
        volumes::snapshot,
        volumes::restore,
        volumes::delete,
        tenants::list,
        tenants::create,
        tenants::update,
        tenants::inspect,
        tenants::new_api_key,
        tenants::list_keys,
        tenants::revoke_key,
        ssh_keys::add,
        ssh_keys::list,
        ssh_keys::remove,
        nodes::list,
        nodes::drain,
        nodes::undrain,
        moves::move_sandbox,
        tenants::usage,
        tenants::usage_series,
        tenants::audit,
        tenants::metrics,
        console::login_link,
        console::login,
        console::current,
        console::logout,
        console::list,
        console::revoke,
        console::revoke_all,
    )
)]
struct ApiDoc;

/// TCP callers authenticate with `Authorization: Bearer <API key>`.
struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").into();
    doc
}

/// The document as JSON, built once.
pub fn json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        document()
            .to_pretty_json()
            .expect("the OpenAPI document serializes")
    })
}
