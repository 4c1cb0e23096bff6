//! What the end-to-end suites share: the daemon harness, bounded commands,
//! HTTP and skips come from `dwell-testkit` (re-exported here, so a suite
//! needs only `use common::*`); what only these suites use lives beside
//! this file.

#![allow(dead_code, unused_imports)]

pub mod console;
pub mod counter;
pub mod script;
pub mod tls;

pub use dwell_testkit::connect::{b64, envelope, envelopes, signature, unb64};
pub use dwell_testkit::http::{self, wait_listening, Response};
pub use dwell_testkit::moto::Moto;
pub use dwell_testkit::*;
