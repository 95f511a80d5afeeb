//! The project registry: a small JSON file, edited by hand now and then, possibly absent.
//! Read fresh on every request.

use std::path::Path;

use serde_json::Value;

use crate::error::StandinError;

/// The registry's projects: `[]` when the file is absent.
///
/// Accepted shapes: `{"projects": [...]}`, `{"projects": {"name": {...}}}` (each entry
/// becomes `{"name": key, ...}`), or a bare array.
pub fn projects(path: &Path) -> Result<Vec<Value>, StandinError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(StandinError::io(
                "cannot read the project registry",
                path,
                e,
            ));
        }
    };
    let invalid = |message: String| StandinError::Registry {
        path: path.to_path_buf(),
        message,
    };
    let value: Value = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    match value {
        Value::Array(items) => Ok(items),
        Value::Object(mut map) => match map.remove("projects") {
            Some(Value::Array(items)) => Ok(items),
            Some(Value::Object(named)) => Ok(named
                .into_iter()
                .map(|(name, entry)| match entry {
                    Value::Object(mut fields) => {
                        fields.entry("name").or_insert(Value::String(name));
                        Value::Object(fields)
                    }
                    other => serde_json::json!({ "name": name, "value": other }),
                })
                .collect()),
            None => Ok(Vec::new()),
            Some(other) => Err(invalid(format!(
                "`projects` is {other}, expected a list or an object"
            ))),
        },
        other => Err(invalid(format!(
            "top level is {other}, expected an object or a list"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn absent_file_means_no_projects_and_shapes_are_understood() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("project-registry.json");
        assert!(projects(&path).unwrap().is_empty());
        std::fs::write(&path, r#"{"projects": {"atocore": {"root": "/x"}}}"#).unwrap();
        assert_eq!(
            projects(&path).unwrap(),
            vec![json!({"name": "atocore", "root": "/x"})]
        );
        std::fs::write(&path, r#"[{"name": "a"}]"#).unwrap();
        assert_eq!(projects(&path).unwrap(), vec![json!({"name": "a"})]);
        std::fs::write(&path, "{nope").unwrap();
        assert!(matches!(
            projects(&path),
            Err(StandinError::Registry { .. })
        ));
    }
}
