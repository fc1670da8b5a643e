//! String comparisons for record matching: `jaro(a, b)`, `jaro_winkler(a, b)`,
//! `jaccard(a, b)` (token sets) → `DOUBLE` in [0, 1]; `damerau_levenshtein(a, b)` →
//! `BIGINT` edits; `days_between(a, b)` → `BIGINT` days between two dates written as
//! `YYYY-MM-DD`, `YYYYMMDD` or `YYYY/MM/DD` (NULL when either is not a real date);
//! `soundex(text)` → text; `double_metaphone(text)` and `double_metaphone_alt(text)`
//! → the primary and alternate Double Metaphone codes (the alternate is the primary when
//! the name has no other reading). Characters, not bytes, are compared. A NULL
//! argument gives NULL (a missing value is neither similar nor different: matching
//! rules say what it means). DataFusion's own `levenshtein(a, b)` completes the set.
//!
//! ```sql
//! SELECT jaro_winkler('MARTHA', 'MARHTA');        -- 0.9611…
//! SELECT damerau_levenshtein('smtih', 'smith');  -- 1
//! SELECT soundex('Robert'), soundex('Rupert');    -- R163, R163
//! SELECT days_between('19560909', '1956-09-19');  -- 10
//! SELECT double_metaphone('Smith'), double_metaphone_alt('Schmidt');  -- SM0, SMT
//! ```

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{ArrayRef, Float64Builder, Int64Builder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::scalar_doc_sections::DOC_SECTION_STRING;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use tessera_core::similarity;

use super::strings::map_strings;

/// What a comparison returns.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Similarity(fn(&str, &str) -> f64),
    Distance(fn(&str, &str) -> usize),
    /// A distance defined for some inputs only (NULL otherwise).
    Partial(fn(&str, &str) -> Option<i64>),
}

/// One two-string comparison as a SQL function (identified by its name).
#[derive(Debug)]
struct Compare {
    name: &'static str,
    kind: Kind,
    signature: Signature,
    doc: &'static LazyLock<Documentation>,
}

impl PartialEq for Compare {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Compare {}

impl std::hash::Hash for Compare {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

macro_rules! doc {
    ($name:ident, $text:expr, $syntax:expr, $example:expr) => {
        static $name: LazyLock<Documentation> = LazyLock::new(|| {
            Documentation::builder(DOC_SECTION_STRING, $text, $syntax)
                .with_sql_example($example)
                .with_argument("a", "a string")
                .with_argument("b", "a string")
                .build()
        });
    };
}

doc!(
    JARO,
    "Jaro similarity of two strings, in [0, 1].",
    "jaro(a, b)",
    "SELECT jaro('MARTHA', 'MARHTA');"
);
doc!(
    JARO_WINKLER,
    "Jaro–Winkler similarity (Jaro boosted by a common prefix of up to 4 characters), in [0, 1].",
    "jaro_winkler(a, b)",
    "SELECT jaro_winkler('MARTHA', 'MARHTA');"
);
doc!(
    JACCARD,
    "Jaccard similarity of the sets of whitespace-separated tokens, in [0, 1].",
    "jaccard(a, b)",
    "SELECT jaccard('12 High Street', '12 High St');"
);
doc!(
    DAMERAU,
    "Damerau–Levenshtein distance: inserts, deletes, substitutions and swaps of adjacent characters.",
    "damerau_levenshtein(a, b)",
    "SELECT damerau_levenshtein('smtih', 'smith');"
);

static DAYS_BETWEEN: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION_STRING,
        "Whole days between two dates (YYYY-MM-DD, YYYYMMDD, YYYY/MM/DD or a timestamp), never negative; NULL when either is not a real date.",
        "days_between(a, b)",
    )
    .with_sql_example("SELECT days_between('19560909', '1956-09-19');")
    .with_argument("a", "a date, or text holding one")
    .with_argument("b", "a date, or text holding one")
    .build()
});

impl ScalarUDFImpl for Compare {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(match self.kind {
            Kind::Similarity(_) => DataType::Float64,
            Kind::Distance(_) | Kind::Partial(_) => DataType::Int64,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let all_scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let n = if all_scalar { 1 } else { args.number_rows };
        let arrays: Vec<ArrayRef> = args
            .args
            .iter()
            .map(|a| {
                a.to_array(n)
                    .and_then(|arr| Ok(cast(&arr, &DataType::Utf8)?))
            })
            .collect::<Result<_>>()?;
        let a = datafusion::common::cast::as_string_array(arrays[0].as_ref())?;
        let b = datafusion::common::cast::as_string_array(arrays[1].as_ref())?;
        let pairs = a.iter().zip(b.iter());
        let array: ArrayRef = match self.kind {
            Kind::Similarity(f) => {
                let mut out = Float64Builder::with_capacity(n);
                for (x, y) in pairs {
                    out.append_option(x.zip(y).map(|(x, y)| f(x, y)));
                }
                Arc::new(out.finish())
            }
            Kind::Distance(f) => {
                let mut out = Int64Builder::with_capacity(n);
                for (x, y) in pairs {
                    out.append_option(x.zip(y).map(|(x, y)| f(x, y) as i64));
                }
                Arc::new(out.finish())
            }
            Kind::Partial(f) => {
                let mut out = Int64Builder::with_capacity(n);
                for (x, y) in pairs {
                    out.append_option(x.zip(y).and_then(|(x, y)| f(x, y)));
                }
                Arc::new(out.finish())
            }
        };
        if all_scalar {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                &array, 0,
            )?))
        } else {
            Ok(ColumnarValue::Array(array))
        }
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(self.doc)
    }
}

fn compare(name: &'static str, kind: Kind, doc: &'static LazyLock<Documentation>) -> ScalarUDF {
    ScalarUDF::new_from_impl(Compare {
        name,
        kind,
        // Dates may come as DATE or TIMESTAMP: any type, read as its text.
        signature: match kind {
            Kind::Partial(_) => Signature::any(2, Volatility::Immutable),
            _ => Signature::string(2, Volatility::Immutable),
        },
        doc,
    })
}

/// `soundex(text)`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Soundex {
    signature: Signature,
}

static SOUNDEX: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION_STRING,
        "American Soundex code of a name: its first letter and three digits; NULL without letters.",
        "soundex(text)",
    )
    .with_sql_example("SELECT soundex('Robert');")
    .with_argument("text", "a name")
    .build()
});

impl ScalarUDFImpl for Soundex {
    fn name(&self) -> &str {
        "soundex"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        map_strings(&args.args, args.number_rows, |v| {
            Ok(similarity::soundex(v[0]))
        })
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&SOUNDEX)
    }
}

/// `double_metaphone(text)` / `double_metaphone_alt(text)`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct DoubleMetaphone {
    alternate: bool,
    signature: Signature,
}

static DOUBLE_METAPHONE: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION_STRING,
        "Primary Double Metaphone code of a name (full length); NULL for a NULL name.",
        "double_metaphone(text)",
    )
    .with_sql_example("SELECT double_metaphone('Schmidt');")
    .with_argument("text", "a name")
    .build()
});

static DOUBLE_METAPHONE_ALT: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION_STRING,
        "Alternate Double Metaphone code of a name, or its primary code when it has no other reading.",
        "double_metaphone_alt(text)",
    )
    .with_sql_example("SELECT double_metaphone_alt('Smith');")
    .with_argument("text", "a name")
    .build()
});

impl ScalarUDFImpl for DoubleMetaphone {
    fn name(&self) -> &str {
        if self.alternate {
            "double_metaphone_alt"
        } else {
            "double_metaphone"
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let alternate = self.alternate;
        map_strings(&args.args, args.number_rows, |v| {
            let (primary, secondary) = tessera_core::phonetic::double_metaphone(v[0]);
            Ok(Some(if alternate && !secondary.is_empty() {
                secondary
            } else {
                primary
            }))
        })
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(if self.alternate {
            &DOUBLE_METAPHONE_ALT
        } else {
            &DOUBLE_METAPHONE
        })
    }
}

/// Every comparison function.
pub fn functions() -> Vec<ScalarUDF> {
    vec![
        compare("jaro", Kind::Similarity(similarity::jaro), &JARO),
        compare(
            "jaro_winkler",
            Kind::Similarity(similarity::jaro_winkler),
            &JARO_WINKLER,
        ),
        compare("jaccard", Kind::Similarity(similarity::jaccard), &JACCARD),
        compare(
            "damerau_levenshtein",
            Kind::Distance(similarity::damerau_levenshtein),
            &DAMERAU,
        ),
        compare(
            "days_between",
            Kind::Partial(similarity::days_between),
            &DAYS_BETWEEN,
        ),
        ScalarUDF::new_from_impl(Soundex {
            signature: Signature::string(1, Volatility::Immutable),
        }),
        ScalarUDF::new_from_impl(DoubleMetaphone {
            alternate: false,
            signature: Signature::string(1, Volatility::Immutable),
        }),
        ScalarUDF::new_from_impl(DoubleMetaphone {
            alternate: true,
            signature: Signature::string(1, Volatility::Immutable),
        }),
    ]
}
