//! The JSON (and so YAML) view of objects: the proto3 JSON mapping generated
//! by pbjson, plus the few places where Kubernetes manifests are looser than
//! proto3 JSON, so that manifests apply as written and print as kubectl
//! prints them:
//!
//! - int-or-string fields (`targetPort`, `maxSurge`, probe ports) are strings
//!   in the messages; numbers are accepted and printed back as numbers;
//! - quantities (`cpu: 1`) may be numbers in manifests;
//! - 64-bit integers (`generation`) print as numbers, not proto3's strings.
//!
//! Unknown fields are rejected with the path of the field.

use serde_json::Value;

use crate::object::Object;

/// Why a JSON/YAML document is not an object of the expected kind.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    /// Where in the document ("spec.template.spec.containers[0].image"),
    /// empty for the whole document.
    pub field: String,
    /// What is wrong there.
    pub message: String,
}

/// (parent key, key) pairs of int-or-string fields; "*" matches any parent.
const INT_OR_STRING: &[(&str, &str)] = &[
    ("*", "targetPort"),
    ("rollingUpdate", "maxSurge"),
    ("rollingUpdate", "maxUnavailable"),
    ("httpGet", "port"),
    ("tcpSocket", "port"),
];

/// Maps whose values are quantities.
const QUANTITY_MAPS: &[&str] = &["requests", "limits", "capacity", "allocatable"];

/// 64-bit integer fields, printed as JSON numbers.
const INT64_FIELDS: &[&str] = &[
    "deletionGracePeriodSeconds",
    "generation",
    "observedGeneration",
    "terminationGracePeriodSeconds",
    "tolerationSeconds",
];

fn is_int_or_string(parent: &str, key: &str) -> bool {
    INT_OR_STRING
        .iter()
        .any(|(p, k)| *k == key && (*p == "*" || *p == parent))
}

/// Loosens a manifest into proto3 JSON: numbers where strings are meant.
fn normalize_in(value: &mut Value, parent: &str) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                let number_to_string = is_int_or_string(parent, key) || key == "sizeLimit";
                if number_to_string && let Value::Number(n) = v {
                    *v = Value::String(n.to_string());
                    continue;
                }
                if QUANTITY_MAPS.contains(&key.as_str())
                    && let Value::Object(q) = v
                {
                    for qv in q.values_mut() {
                        if let Value::Number(n) = qv {
                            *qv = Value::String(n.to_string());
                        }
                    }
                    continue;
                }
                normalize_in(v, key);
            }
        }
        Value::Array(items) => {
            for v in items {
                normalize_in(v, parent);
            }
        }
        _ => {}
    }
}

/// Prints proto3 JSON the way Kubernetes does.
fn normalize_out(value: &mut Value, parent: &str) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                let numeric = is_int_or_string(parent, key) || INT64_FIELDS.contains(&key.as_str());
                if numeric
                    && let Value::String(s) = v
                    && let Ok(n) = s.parse::<i64>()
                {
                    *v = Value::from(n);
                    continue;
                }
                normalize_out(v, key);
            }
        }
        Value::Array(items) => {
            for v in items {
                normalize_out(v, parent);
            }
        }
        _ => {}
    }
}

/// The object as JSON, with apiVersion and kind set.
pub fn to_value<K: Object>(object: &K) -> Value {
    let mut object = object.clone();
    object.set_type_meta();
    let mut value = serde_json::to_value(&object).expect("objects always serialize");
    normalize_out(&mut value, "");
    value
}

/// Pretty JSON text of the object.
pub fn to_json_string<K: Object>(object: &K) -> String {
    serde_json::to_string_pretty(&to_value(object)).expect("JSON values always print")
}

/// Parses one object of kind `K` from its JSON/YAML value. apiVersion and
/// kind, when present, must be `K`'s.
pub fn from_value<K: Object>(mut value: Value) -> Result<K, DecodeError> {
    let info = K::INFO;
    let Value::Object(map) = &value else {
        return Err(DecodeError {
            field: String::new(),
            message: format!("a {} must be a JSON/YAML mapping", info.kind),
        });
    };
    if let Some(kind) = map.get("kind").and_then(Value::as_str)
        && kind != info.kind
    {
        return Err(DecodeError {
            field: "kind".into(),
            message: format!("kind: expected {}, got {kind:?}", info.kind),
        });
    }
    if let Some(av) = map.get("apiVersion").and_then(Value::as_str)
        && av != info.api_version
    {
        return Err(DecodeError {
            field: "apiVersion".into(),
            message: format!(
                "apiVersion: {} is served as {:?}, got {av:?}",
                info.kind, info.api_version
            ),
        });
    }
    normalize_in(&mut value, "");
    serde_path_to_error::deserialize::<_, K>(value).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." { String::new() } else { field };
        let inner = e.into_inner().to_string();
        let message = if field.is_empty() {
            inner
        } else {
            format!("{field}: {inner}")
        };
        DecodeError { field, message }
    })
}

/// Parses one object of kind `K` from JSON text.
pub fn from_json_str<K: Object>(text: &str) -> Result<K, DecodeError> {
    let value: Value = serde_json::from_str(text).map_err(|e| DecodeError {
        field: String::new(),
        message: format!("not valid JSON: {e}"),
    })?;
    from_value(value)
}

/// Applies a JSON merge patch (RFC 7386) to `target`.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let map = target.as_object_mut().expect("made an object above");
    for (key, value) in patch {
        if value.is_null() {
            map.remove(key);
        } else {
            merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api;

    #[test]
    fn manifest_numbers_become_strings_and_print_back_as_numbers() {
        let svc: api::Service = from_value(json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "generation": 3},
            "spec": {"ports": [{"port": 80, "targetPort": 8080}], "clusterIP": "10.0.0.1"}
        }))
        .unwrap();
        let spec = svc.spec.as_ref().unwrap();
        assert_eq!(spec.ports[0].target_port, "8080");
        assert_eq!(spec.ports[0].port, 80);
        assert_eq!(spec.cluster_ip, "10.0.0.1");
        let out = to_value(&svc);
        assert_eq!(out["spec"]["ports"][0]["targetPort"], json!(8080));
        assert_eq!(out["spec"]["ports"][0]["port"], json!(80));
        assert_eq!(out["metadata"]["generation"], json!(3));
        assert_eq!(out["kind"], json!("Service"));
    }

    #[test]
    fn quantities_may_be_numbers() {
        let pod: api::Pod = from_value(json!({
            "spec": {"containers": [{"name": "c", "image": "i",
                "resources": {"requests": {"cpu": 1, "memory": "128Mi"}}}]}
        }))
        .unwrap();
        let c = &pod.spec.unwrap().containers[0];
        assert_eq!(c.resources.as_ref().unwrap().requests["cpu"], "1");
    }

    #[test]
    fn unknown_fields_are_rejected_with_their_path() {
        let err = from_value::<api::Deployment>(json!({
            "spec": {"template": {"spec": {"containers": [{"name": "c", "imagee": "x"}]}}}
        }))
        .unwrap_err();
        assert!(err.message.contains("imagee"), "{}", err.message);
        assert!(
            err.field.starts_with("spec.template.spec.containers"),
            "{}",
            err.field
        );
    }

    #[test]
    fn wrong_kind_is_rejected() {
        let err = from_value::<api::Pod>(json!({"kind": "Service"})).unwrap_err();
        assert_eq!(err.field, "kind");
        let err = from_value::<api::Deployment>(json!({"apiVersion": "v1"})).unwrap_err();
        assert_eq!(err.field, "apiVersion");
    }

    #[test]
    fn secret_data_is_base64() {
        let s: api::Secret = from_value(json!({"data": {"k": "aGVsbG8="}})).unwrap();
        assert_eq!(s.data["k"], b"hello");
        assert_eq!(to_value(&s)["data"]["k"], json!("aGVsbG8="));
    }

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
        let mut doc = json!({"a": [1, 2]});
        merge_patch(&mut doc, &json!({"a": [3]}));
        assert_eq!(doc, json!({"a": [3]}));
    }
}
