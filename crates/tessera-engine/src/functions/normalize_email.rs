//! `normalize_email(text) -> text`

use std::sync::LazyLock;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::logical_expr::scalar_doc_sections::DOC_SECTION_STRING;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::strings::map_strings;

/// Trims and lower-cases an e-mail address; NULL when the value cannot be an address.
///
/// ```sql
/// SELECT normalize_email('  Jane.Doe@Example.COM ');  -- jane.doe@example.com
/// ```
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct NormalizeEmail {
    signature: Signature,
}

impl NormalizeEmail {
    pub fn new() -> Self {
        NormalizeEmail {
            signature: Signature::string(1, Volatility::Immutable),
        }
    }
}

impl Default for NormalizeEmail {
    fn default() -> Self {
        Self::new()
    }
}

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION_STRING,
        "Trims and lower-cases an e-mail address; NULL when it cannot be an address.",
        "normalize_email(text)",
    )
    .with_sql_example("SELECT normalize_email('  Jane.Doe@Example.COM ');")
    .with_argument("text", "an e-mail address as entered")
    .build()
});

impl ScalarUDFImpl for NormalizeEmail {
    fn name(&self) -> &str {
        "normalize_email"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        map_strings(&args.args, args.number_rows, |v| {
            Ok(tessera_core::identifier::normalize_email(v[0]))
        })
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOC)
    }
}
