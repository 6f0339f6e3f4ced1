//! Containers from Docker: the Engine API client (`client.rs`) and the
//! watcher that keeps the container registry current from Docker's event
//! stream (`watch.rs`). Docker is never asked anything on the request path.

mod client;
mod watch;

pub use client::{DockerClient, DockerError, Event, Events};
pub use watch::{Inspect, Skipped, Watcher, container_info, hold};
