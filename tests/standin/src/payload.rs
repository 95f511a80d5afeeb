//! Request bodies: typed validation of `POST /memory` and `POST /interactions`, with
//! FastAPI-style error details (`{"loc": ["body", field], "msg", "type"}`) for the 422.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::store::{Interaction, NewMemory};

/// One problem with a request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub loc: Vec<String>,
    pub msg: String,
    #[serde(rename = "type")]
    pub kind: String,
}

impl FieldError {
    fn new(field: &str, kind: &str, msg: impl Into<String>) -> Self {
        Self {
            loc: vec!["body".to_owned(), field.to_owned()],
            msg: msg.into(),
            kind: kind.to_owned(),
        }
    }
}

/// Collects field errors while reading a JSON object.
struct Fields<'a> {
    map: &'a Map<String, Value>,
    errors: Vec<FieldError>,
}

impl<'a> Fields<'a> {
    fn string(&mut self, name: &str, required: bool) -> Option<String> {
        match self.map.get(name) {
            Some(Value::String(s)) => Some(s.clone()),
            None if !required => None,
            None => {
                self.errors
                    .push(FieldError::new(name, "missing", "field required"));
                None
            }
            Some(_) => {
                self.errors.push(FieldError::new(
                    name,
                    "string_type",
                    "input should be a valid string",
                ));
                None
            }
        }
    }

    /// A field that must be present and is a string or null.
    fn nullable_string(&mut self, name: &str) -> Option<Option<String>> {
        match self.map.get(name) {
            Some(Value::String(s)) => Some(Some(s.clone())),
            Some(Value::Null) => Some(None),
            None => {
                self.errors
                    .push(FieldError::new(name, "missing", "field required"));
                None
            }
            Some(_) => {
                self.errors.push(FieldError::new(
                    name,
                    "string_type",
                    "input should be a valid string or null",
                ));
                None
            }
        }
    }

    fn boolean(&mut self, name: &str) -> Option<bool> {
        match self.map.get(name) {
            Some(Value::Bool(b)) => Some(*b),
            None => {
                self.errors
                    .push(FieldError::new(name, "missing", "field required"));
                None
            }
            Some(_) => {
                self.errors.push(FieldError::new(
                    name,
                    "bool_type",
                    "input should be a valid boolean",
                ));
                None
            }
        }
    }
}

fn object(body: &[u8]) -> Result<Map<String, Value>, Vec<FieldError>> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(vec![FieldError {
            loc: vec!["body".to_owned()],
            msg: "input should be a JSON object".to_owned(),
            kind: "model_type".to_owned(),
        }]),
        Err(e) => Err(vec![FieldError {
            loc: vec!["body".to_owned()],
            msg: format!("JSON decode error: {e}"),
            kind: "json_invalid".to_owned(),
        }]),
    }
}

/// `POST /interactions`: `{"prompt": str, "response": str, "client": str,
/// "session_id": str, "project": str|null, "reinforce": bool}`, every field present.
/// Unknown fields are ignored.
pub fn interaction(body: &[u8]) -> Result<Interaction, Vec<FieldError>> {
    let map = object(body)?;
    let mut f = Fields {
        map: &map,
        errors: Vec::new(),
    };
    let prompt = f.string("prompt", true);
    let response = f.string("response", true);
    let client = f.string("client", true);
    let session_id = f.string("session_id", true);
    let project = f.nullable_string("project");
    let reinforce = f.boolean("reinforce");
    match (prompt, response, client, session_id, project, reinforce) {
        (
            Some(prompt),
            Some(response),
            Some(client),
            Some(session_id),
            Some(project),
            Some(reinforce),
        ) if f.errors.is_empty() => Ok(Interaction {
            prompt,
            response,
            client,
            session_id,
            project,
            reinforce,
        }),
        _ => Err(f.errors),
    }
}

/// `POST /memory`: `{"memory_type": str, "content": str (not empty), "project": str
/// (default ""), "confidence": number in [0, 1] (default 1.0)}`.
pub fn memory(body: &[u8]) -> Result<NewMemory, Vec<FieldError>> {
    let map = object(body)?;
    let mut f = Fields {
        map: &map,
        errors: Vec::new(),
    };
    let memory_type = f.string("memory_type", true);
    let content = f.string("content", true);
    if content.as_deref() == Some("") {
        f.errors.push(FieldError::new(
            "content",
            "string_too_short",
            "content must not be empty",
        ));
    }
    let project = f.string("project", false).unwrap_or_default();
    let confidence = match map.get("confidence") {
        None => Some(1.0),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(c) if (0.0..=1.0).contains(&c) => Some(c),
            _ => {
                f.errors.push(FieldError::new(
                    "confidence",
                    "value_error",
                    "confidence must be between 0 and 1",
                ));
                None
            }
        },
        Some(_) => {
            f.errors.push(FieldError::new(
                "confidence",
                "float_type",
                "input should be a valid number",
            ));
            None
        }
    };
    match (memory_type, content, confidence) {
        (Some(memory_type), Some(content), Some(confidence)) if f.errors.is_empty() => {
            Ok(NewMemory {
                memory_type,
                content,
                project,
                confidence,
            })
        }
        _ => Err(f.errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_complete_capture_body_is_accepted() {
        let body = br#"{"prompt":"p","response":"r","client":"claude-code","session_id":"s","project":null,"reinforce":false,"extra":1}"#;
        let turn = interaction(body).unwrap();
        assert_eq!(turn.project, None);
        assert!(!turn.reinforce);
    }

    #[test]
    fn missing_and_mistyped_capture_fields_are_each_reported() {
        let errors = interaction(
            br#"{"prompt":1,"response":"r","client":"c","project":"x","reinforce":"no"}"#,
        )
        .unwrap_err();
        let fields: Vec<(&str, &str)> = errors
            .iter()
            .map(|e| (e.loc[1].as_str(), e.kind.as_str()))
            .collect();
        assert_eq!(
            fields,
            vec![
                ("prompt", "string_type"),
                ("session_id", "missing"),
                ("reinforce", "bool_type")
            ]
        );
        assert_eq!(interaction(b"[]").unwrap_err()[0].kind, "model_type");
        assert_eq!(interaction(b"{").unwrap_err()[0].kind, "json_invalid");
    }

    #[test]
    fn memory_defaults_and_bounds() {
        let m = memory(br#"{"memory_type":"episodic","content":"c"}"#).unwrap();
        assert_eq!((m.project.as_str(), m.confidence), ("", 1.0));
        assert!(memory(br#"{"memory_type":"episodic","content":"c","confidence":2}"#).is_err());
        assert!(memory(br#"{"memory_type":"episodic","content":""}"#).is_err());
    }
}
