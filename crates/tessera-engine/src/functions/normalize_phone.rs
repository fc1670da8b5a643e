//! `normalize_phone(text [, default_region]) -> text`

use std::sync::LazyLock;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::scalar_doc_sections::DOC_SECTION_STRING;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use tessera_core::identifier::{normalize_phone, phone_region};

use super::strings::map_strings;

/// A phone number in E.164 (`+14155550100`). National numbers are read in
/// `default_region` (ISO 3166 code, `US` when omitted); NULL when the value cannot be a
/// phone number there (libphonenumber's numbering plans). An unknown region is an error.
///
/// ```sql
/// SELECT normalize_phone('(415) 555-0100');          -- +14155550100
/// SELECT normalize_phone('020 7946 0958', 'GB');     -- +442079460958
/// ```
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct NormalizePhone {
    signature: Signature,
}

impl NormalizePhone {
    pub fn new() -> Self {
        NormalizePhone {
            signature: Signature::one_of(
                vec![TypeSignature::String(1), TypeSignature::String(2)],
                Volatility::Immutable,
            ),
        }
    }
}

impl Default for NormalizePhone {
    fn default() -> Self {
        Self::new()
    }
}

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION_STRING,
        "Normalizes a phone number to E.164; national numbers are read in default_region (US when omitted).",
        "normalize_phone(text [, default_region])",
    )
    .with_sql_example("SELECT normalize_phone('020 7946 0958', 'GB');")
    .with_argument("text", "a phone number as entered")
    .with_argument("default_region", "ISO 3166-1 alpha-2 code used for national numbers")
    .build()
});

impl ScalarUDFImpl for NormalizePhone {
    fn name(&self) -> &str {
        "normalize_phone"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        map_strings(&args.args, args.number_rows, |v| {
            let region = v.get(1).copied();
            if let Some(r) = region
                && phone_region(r).is_none()
            {
                return exec_err!(
                    "normalize_phone: unknown region {r:?}; expected an ISO 3166-1 alpha-2 \
                     code with a numbering plan (US, GB, DE, FR, IN, JP, BR, ...)"
                );
            }
            Ok(normalize_phone(v[0], region))
        })
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOC)
    }
}
