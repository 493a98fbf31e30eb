//! golden-core: the domain of the golden-ami pipeline (recipes, versions, manifest, scripts) as plain
//! data and pure functions, the AWS ports with their SDK adapters, and the stage handlers the Lambdas run.

pub mod aws;
pub mod bake;
pub mod config;
pub mod error;
pub mod freshness;
pub mod ids;
pub mod lifecycle;
pub mod manifest;
pub mod metrics;
pub mod ports;
pub mod publishing;
pub mod reaping;
pub mod recipe;
pub mod retention;
pub mod runtime;
pub mod scripts;
pub mod tags;
pub mod version;

pub use config::Config;
pub use error::{Error, StageError};
