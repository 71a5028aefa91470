#![doc = include_str!("../README.md")]

mod error;
pub mod webhooks;

pub use error::{Error, Result};
