//! `redact_pii(json) -> text`

use std::sync::LazyLock;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::logical_expr::scalar_doc_sections::DOC_SECTION_STRING;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use serde_json::Value;

use super::strings::map_strings;

/// The JSON text with the value of every personal-data key (`email`, `phone`,
/// `first_name`, `address`, `ip`, … at any depth; see `tessera_core::schema::PII_KEYS`)
/// replaced by `"***"`. Text that is not JSON becomes `***` as a whole. Users without
/// the `pii` grant see JSON columns through it.
///
/// ```sql
/// SELECT redact_pii('{"email":"a@b.c","plan":"pro"}');  -- {"email":"***","plan":"pro"}
/// ```
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct RedactPii {
    signature: Signature,
}

impl RedactPii {
    pub fn new() -> Self {
        RedactPii {
            signature: Signature::string(1, Volatility::Immutable),
        }
    }
}

impl Default for RedactPii {
    fn default() -> Self {
        Self::new()
    }
}

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION_STRING,
        "Replaces the values of personal-data keys in a JSON text by \"***\".",
        "redact_pii(json)",
    )
    .with_sql_example(r#"SELECT redact_pii('{"email":"a@b.c","plan":"pro"}');"#)
    .with_argument("json", "a JSON text (traits, properties, context)")
    .build()
});

pub use tessera_core::schema::is_pii_key;

fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if is_pii_key(key) && !v.is_null() {
                    *v = Value::String("***".into());
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// `text` with its personal data redacted.
pub fn redact_json(text: &str) -> String {
    match serde_json::from_str::<Value>(text) {
        Ok(mut v) => {
            redact(&mut v);
            v.to_string()
        }
        Err(_) => "***".into(),
    }
}

impl ScalarUDFImpl for RedactPii {
    fn name(&self) -> &str {
        "redact_pii"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        map_strings(&args.args, args.number_rows, |v| {
            Ok(Some(redact_json(v[0])))
        })
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_nested_keys_in_any_spelling() {
        let out: Value = serde_json::from_str(&redact_json(
            r#"{"Email":"a@b.c","plan":"pro","address":{"street":"1 High St"},"items":[{"firstName":"Jo"}],"ip":null}"#,
        ))
        .unwrap_or_default();
        let want: Value = serde_json::from_str(
            r#"{"Email":"***","address":"***","ip":null,"items":[{"firstName":"***"}],"plan":"pro"}"#,
        )
        .unwrap_or_default();
        assert_eq!(out, want);
        assert_eq!(redact_json("not json"), "***");
        assert!(is_pii_key("last-name") && !is_pii_key("plan"));
    }
}
