//! One integration-test binary, one module per topic.

mod common;
mod suite;
