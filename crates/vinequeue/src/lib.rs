#![doc = include_str!("../../../README.md")]
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub use vinequeue_core::*;
