//! Every answer a test receives through [`super::Server::call`] is checked against the OpenAPI
//! document: its status must be documented for the route (success answers and the API's error
//! answers alike) and its JSON body must validate against the documented schema. So each API
//! test also tests the document, on the answers it already produces.

use std::sync::OnceLock;

use serde_json::{json, Map, Value};

/// The document, with strict object schemas (see [`strict`]).
pub struct Doc {
    pub doc: Value,
    strict_components: Value,
}

/// The document of the control plane under test (the same function `GET /openapi.json`
/// serves).
pub fn doc() -> &'static Doc {
    static DOC: OnceLock<Doc> = OnceLock::new();
    DOC.get_or_init(|| {
        let doc: Value =
            serde_json::from_str(kanmon_control::api::openapi::json()).expect("document is JSON");
        let strict_components = strict(&doc["components"]);
        Doc {
            doc,
            strict_components,
        }
    })
}

/// The components with `unevaluatedProperties: false` on every object or `allOf` schema
/// that is not itself a part of an `allOf` (a flattened part sees only its own fields), so a
/// field the code sends but the document does not list fails validation.
fn strict(components: &Value) -> Value {
    let mut c = components.clone();
    let text = components.to_string();
    let Some(schemas) = c.get_mut("schemas").and_then(Value::as_object_mut) else {
        return c;
    };
    let parts: Vec<String> = schemas
        .keys()
        .filter(|name| {
            let needle = format!("\"allOf\":[{{\"$ref\":\"#/components/schemas/{name}\"");
            text.contains(&needle)
        })
        .cloned()
        .collect();
    for (name, schema) in schemas.iter_mut() {
        let Some(obj) = schema.as_object_mut() else {
            continue;
        };
        let composed = obj.contains_key("properties") || obj.contains_key("allOf");
        if composed && !parts.contains(name) {
            obj.insert("unevaluatedProperties".into(), json!(false));
        }
    }
    c
}

impl Doc {
    /// The documented path template `path` (without its query) falls under, preferring the
    /// one with the most literal segments.
    pub fn template(&self, path: &str) -> Option<&str> {
        let path = path.split('?').next().unwrap_or(path);
        let segs: Vec<&str> = path.split('/').collect();
        let paths = self.doc["paths"].as_object()?;
        paths
            .keys()
            .filter_map(|t| {
                let tsegs: Vec<&str> = t.split('/').collect();
                if tsegs.len() != segs.len() {
                    return None;
                }
                let mut literal = 0;
                for (t, s) in tsegs.iter().zip(&segs) {
                    if t.starts_with('{') {
                        continue;
                    }
                    if t != s {
                        return None;
                    }
                    literal += 1;
                }
                Some((literal, t.as_str()))
            })
            .max_by_key(|(literal, _)| *literal)
            .map(|(_, t)| t)
    }

    /// The documented answer of `method` `template` with `status`, `$ref`s resolved.
    fn response(&self, template: &str, method: &str, status: u16) -> Option<&Value> {
        let r = &self.doc["paths"][template][method]["responses"][status.to_string()];
        if let Some(Value::String(reference)) = r.get("$ref") {
            let name = reference.rsplit('/').next()?;
            return self.doc["components"]["responses"].get(name);
        }
        r.as_object().map(|_| r)
    }

    /// Checks one answer; panics with what is wrong.
    pub fn check(&self, method: &str, path: &str, status: u16, body: &Value) {
        let Some(template) = self.template(path) else {
            return; // not an API route: the router's own 404
        };
        let method = method.to_ascii_lowercase();
        if self.doc["paths"][template].get(&method).is_none() {
            return; // the router's own 405
        }
        let is_api_error = body.get("error").is_some_and(Value::is_string);
        let Some(response) = self.response(template, &method, status) else {
            assert!(
                !(200..300).contains(&status) && !is_api_error,
                "{method} {template} answered {status} ({body}), a status the OpenAPI \
                 document does not list for it: add it to the handler's #[utoipa::path]"
            );
            return;
        };
        let Some(schema) = response.pointer("/content/application~1json/schema") else {
            return; // no JSON body documented (204, a download)
        };
        let mut root: Map<String, Value> = match schema {
            Value::Object(m) => m.clone(),
            other => panic!("schema of {method} {template} {status} is not an object: {other}"),
        };
        root.insert("components".into(), self.strict_components.clone());
        let root = Value::Object(root);
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&root)
            .unwrap_or_else(|e| panic!("schema of {method} {template} {status}: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {path} answered {status} with a body that does not match the OpenAPI \
             document: {errors:?}\nbody: {body}"
        );
    }
}
