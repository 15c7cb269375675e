//! The files in `pipelines/`: MongoDB Extended JSON in which a value of the form
//! `{"$param": "name"}` is a named parameter.
//!
//! Binding replaces every such value with the run's value and refuses a file that names a
//! parameter the caller does not provide (or leaves one unused), so a typo in a pipeline is an
//! error in a unit test, not a silently empty match on the server. Pure: no I/O, no knowledge of
//! what the pipelines compute.

use bson::{Bson, Document};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("{file} is not valid Extended JSON: {reason}")]
    Parse { file: &'static str, reason: String },
    #[error("{file} uses parameter {name:?}, which the daemon does not bind")]
    UnknownParam { file: &'static str, name: String },
    #[error("{file} never uses parameter {name:?}")]
    UnusedParam { file: &'static str, name: String },
    #[error("a chunk needs at least one window")]
    NoWindows,
    #[error("{file} must be {expected}")]
    Shape {
        file: &'static str,
        expected: &'static str,
    },
}

/// A pipeline file bound: its stages.
pub fn stages(
    file: &'static str,
    text: &str,
    bindings: &[(&'static str, Bson)],
) -> Result<Vec<Document>, PipelineError> {
    let Bson::Array(stages) = bind(parse(file, text)?, file, bindings)? else {
        return Err(PipelineError::Shape {
            file,
            expected: "an array of stages",
        });
    };
    stages
        .into_iter()
        .map(|stage| match stage {
            Bson::Document(d) => Ok(d),
            _ => Err(PipelineError::Shape {
                file,
                expected: "an array of stage documents",
            }),
        })
        .collect()
}

/// Parses a pipeline file's Extended JSON into BSON, placeholders and all.
pub fn parse(file: &'static str, text: &str) -> Result<Bson, PipelineError> {
    let json: serde_json::Value = serde_json::from_str(text).map_err(|e| PipelineError::Parse {
        file,
        reason: e.to_string(),
    })?;
    Bson::try_from(json).map_err(|e| PipelineError::Parse {
        file,
        reason: e.to_string(),
    })
}

/// Replaces every `{"$param": name}` in `template`; every binding must be used.
pub fn bind(
    template: Bson,
    file: &'static str,
    bindings: &[(&'static str, Bson)],
) -> Result<Bson, PipelineError> {
    let mut used = vec![false; bindings.len()];
    let bound = substitute(template, file, bindings, &mut used)?;
    if let Some(i) = used.iter().position(|u| !u) {
        return Err(PipelineError::UnusedParam {
            file,
            name: bindings[i].0.to_owned(),
        });
    }
    Ok(bound)
}

fn substitute(
    value: Bson,
    file: &'static str,
    bindings: &[(&'static str, Bson)],
    used: &mut [bool],
) -> Result<Bson, PipelineError> {
    match value {
        Bson::Document(d) => {
            if d.len() == 1 {
                if let Some(Bson::String(name)) = d.get("$param") {
                    let i = bindings
                        .iter()
                        .position(|(n, _)| n == name)
                        .ok_or_else(|| PipelineError::UnknownParam {
                            file,
                            name: name.clone(),
                        })?;
                    used[i] = true;
                    return Ok(bindings[i].1.clone());
                }
            }
            let mut out = Document::new();
            for (k, v) in d {
                out.insert(k, substitute(v, file, bindings, used)?);
            }
            Ok(Bson::Document(out))
        }
        Bson::Array(items) => items
            .into_iter()
            .map(|v| substitute(v, file, bindings, used))
            .collect::<Result<Vec<_>, _>>()
            .map(Bson::Array),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::bson;

    #[test]
    fn every_parameter_is_replaced_and_every_binding_used() {
        let text = r#"[{"$match": {"a": {"$param": "x"}, "b": [{"$param": "x"}, 2]}}]"#;
        let bound = stages("t.json", text, &[("x", Bson::Int32(1))]).unwrap();
        assert_eq!(bound, vec![bson::doc! {"$match": {"a": 1, "b": [1, 2]}}]);
        let err = stages("t.json", text, &[("x", Bson::Int32(1)), ("y", bson!(2))]).unwrap_err();
        assert!(matches!(err, PipelineError::UnusedParam { ref name, .. } if name == "y"));
        let err = stages("t.json", text, &[]).unwrap_err();
        assert!(matches!(err, PipelineError::UnknownParam { ref name, .. } if name == "x"));
        let err = stages("t.json", "{", &[]).unwrap_err();
        assert!(matches!(err, PipelineError::Parse { .. }));
        let err = stages("t.json", "{}", &[]).unwrap_err();
        assert!(matches!(err, PipelineError::Shape { .. }));
    }
}
