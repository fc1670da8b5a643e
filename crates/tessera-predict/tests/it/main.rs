//! Integration tests of the predictive models: agreement with the reference Python
//! implementation (`lifetimes`, pinned in tests/clients/requirements.txt).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod lifetimes;
