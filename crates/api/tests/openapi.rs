//! The OpenAPI document must describe every route the router serves, and
//! nothing else.

use std::collections::BTreeSet;

#[test]
fn openapi_matches_the_router() {
    let doc: serde_json::Value =
        serde_json::from_str(dwell_api::openapi::json()).expect("the document is JSON");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    let source = include_str!("../src/routes/mod.rs");
    let mut routed = BTreeSet::new();
    // Each `.route("<path>", <method>(..).<method>(..))` in the router.
    for chunk in source.split(".route(").skip(1) {
        let path = chunk.split('"').nth(1).unwrap().to_string();
        let end = chunk
            .find("\n        .route")
            .or_else(|| chunk.find(".with_state"))
            .unwrap_or(chunk.len());
        let spec = &chunk[..end];
        for m in ["get", "post", "put", "patch", "delete"] {
            if spec.contains(&format!("{m}(")) {
                routed.insert(format!("{} {path}", m.to_uppercase()));
            }
        }
    }
    assert_eq!(
        routed, documented,
        "routes (left) and the OpenAPI document (right) differ"
    );
}

#[test]
fn the_error_body_is_documented_with_its_facts() {
    let doc: serde_json::Value =
        serde_json::from_str(dwell_api::openapi::json()).expect("the document is JSON");
    let detail = &doc["components"]["schemas"]["ErrorDetail"];
    for field in ["code", "message", "facts"] {
        assert!(
            detail["properties"].get(field).is_some(),
            "ErrorDetail documents {field}: {detail}"
        );
    }
    let required: Vec<&str> = detail["required"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(!required.contains(&"facts"), "facts is optional: {detail}");
    assert_eq!(
        detail["properties"]["facts"]["additionalProperties"]["type"], "string",
        "{detail}"
    );
}

#[test]
fn only_liveness_the_document_and_the_console_login_are_open_without_a_key() {
    let doc: serde_json::Value =
        serde_json::from_str(dwell_api::openapi::json()).expect("the document is JSON");
    assert_eq!(doc["security"], serde_json::json!([{"apiKey": []}]));
    let mut open = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if op.get("security") == Some(&serde_json::json!([{}])) {
                open.push(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    open.sort();
    assert_eq!(
        open,
        [
            "GET /healthz",
            "GET /openapi.json",
            "POST /v1/console/sessions"
        ]
    );
}

#[test]
fn file_paths_are_documented_as_required_and_absolute() {
    let doc: serde_json::Value =
        serde_json::from_str(dwell_api::openapi::json()).expect("the document is JSON");
    for (method, path) in [
        ("get", "/v1/sandboxes/{id}/files"),
        ("put", "/v1/sandboxes/{id}/files"),
        ("delete", "/v1/sandboxes/{id}/files"),
        ("get", "/v1/sandboxes/{id}/fs/list"),
        ("get", "/v1/sandboxes/{id}/fs/stat"),
    ] {
        let params = doc["paths"][path][method]["parameters"].as_array().unwrap();
        let p = params
            .iter()
            .find(|p| p["name"] == "path")
            .unwrap_or_else(|| panic!("{method} {path} documents no path"));
        assert_eq!(p["required"], true, "{method} {path}: {p}");
        assert_eq!(p["schema"]["pattern"], "^/", "{method} {path}: {p}");
    }
    // The listing takes a depth, the stat nothing more.
    let names = |method: &str, path: &str| -> Vec<String> {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names("get", "/v1/sandboxes/{id}/fs/list"),
        ["id", "path", "depth"]
    );
    assert_eq!(names("get", "/v1/sandboxes/{id}/fs/stat"), ["id", "path"]);
}
