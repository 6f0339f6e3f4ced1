//! Containers from Docker: the Engine API client (`client.rs`), what an
//! inspected container is (`inspect.rs`), and the watcher that keeps the
//! container registry current from Docker's event stream (`watch.rs`).
//! Docker is never asked anything on the request path.

mod client;
mod inspect;
mod watch;

pub use client::{DockerClient, DockerError, Event, Events};
pub use inspect::{Held, Inspect, Skipped, container_info, hold};
pub use watch::Watcher;
