//! A collection's text fields between the wire and the domain: each named once, with a
//! known analyzer.

use quiver_proto::v1 as pb;

use super::invalid;
use crate::error::Result;
use crate::point::{TextAnalyzer, TextFieldSpec};

/// Most text fields a collection may declare.
pub const MAX_TEXT_FIELDS: usize = 16;

/// A create's text fields: named once each, with a known analyzer (unset: english).
pub fn text_fields_from_proto(fields: &[pb::TextField]) -> Result<Vec<TextFieldSpec>> {
    if fields.len() > MAX_TEXT_FIELDS {
        return Err(invalid(
            "text_fields",
            format!("{} fields; at most {MAX_TEXT_FIELDS}", fields.len()),
        ));
    }
    let mut specs: Vec<TextFieldSpec> = Vec::new();
    for (i, f) in fields.iter().enumerate() {
        if f.name.trim().is_empty() {
            return Err(invalid(
                format!("text_fields[{i}].name"),
                "must not be empty",
            ));
        }
        if specs.iter().any(|s| s.name == f.name) {
            return Err(invalid(
                format!("text_fields[{i}].name"),
                format!("`{}` is declared twice", f.name),
            ));
        }
        let analyzer = match pb::TextAnalyzer::try_from(f.analyzer) {
            Ok(pb::TextAnalyzer::Unspecified | pb::TextAnalyzer::English) => TextAnalyzer::English,
            Ok(pb::TextAnalyzer::Simple) => TextAnalyzer::Simple,
            Ok(pb::TextAnalyzer::Whitespace) => TextAnalyzer::Whitespace,
            Err(_) => {
                return Err(invalid(
                    format!("text_fields[{i}].analyzer"),
                    format!(
                        "unknown analyzer {}: expected english, simple or whitespace",
                        f.analyzer
                    ),
                ))
            }
        };
        specs.push(TextFieldSpec {
            name: f.name.clone(),
            analyzer,
        });
    }
    Ok(specs)
}

/// A collection's text fields on the wire.
pub fn text_fields_to_proto(fields: &[TextFieldSpec]) -> Vec<pb::TextField> {
    fields
        .iter()
        .map(|f| pb::TextField {
            name: f.name.clone(),
            analyzer: match f.analyzer {
                TextAnalyzer::English => pb::TextAnalyzer::English,
                TextAnalyzer::Simple => pb::TextAnalyzer::Simple,
                TextAnalyzer::Whitespace => pb::TextAnalyzer::Whitespace,
            } as i32,
        })
        .collect()
}
