//! `sha256_normalized(kind, value) -> text`

use std::sync::LazyLock;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::scalar_doc_sections::DOC_SECTION_HASHING;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use tessera_core::identifier::sha256_normalized;

use super::strings::map_strings;

/// Normalizes `value` as an identifier of `kind` the way ad platforms require for
/// customer matching, then hashes it with SHA-256 (lower-case hex). Kinds: `email`,
/// `phone` (E.164 with `+`), `phone_digits` (without `+`), `first_name`, `last_name`,
/// `name`, `city`, `state`, `zip`, `country`, `external_id`. NULL when the value
/// normalizes to nothing; an unknown kind is an error naming the known ones.
///
/// ```sql
/// SELECT sha256_normalized('email', ' Jane@Example.com');
/// -- 8c87b489ce35cf2e2f39f80e282cb2e804932a56a213983eeeb428407d43b52d
/// ```
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Sha256Normalized {
    signature: Signature,
}

impl Sha256Normalized {
    pub fn new() -> Self {
        Sha256Normalized {
            signature: Signature::string(2, Volatility::Immutable),
        }
    }
}

impl Default for Sha256Normalized {
    fn default() -> Self {
        Self::new()
    }
}

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION_HASHING,
        "Normalizes an identifier of the given kind, then hashes it with SHA-256 (hex).",
        "sha256_normalized(kind, value)",
    )
    .with_sql_example("SELECT sha256_normalized('email', ' Jane@Example.com');")
    .with_argument("kind", "email, phone, phone_digits, first_name, last_name, name, city, state, zip, country or external_id")
    .with_argument("value", "the identifier as entered")
    .build()
});

impl ScalarUDFImpl for Sha256Normalized {
    fn name(&self) -> &str {
        "sha256_normalized"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        map_strings(&args.args, args.number_rows, |v| {
            match sha256_normalized(v[0], v[1]) {
                Ok(h) => Ok(h),
                Err(e) => exec_err!("sha256_normalized: {e}"),
            }
        })
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOC)
    }
}
