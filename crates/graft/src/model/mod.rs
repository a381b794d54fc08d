//! Models: the graph built from a spec, the values flowing through it, its summary and its files.

pub mod graph;
pub mod io;
pub mod params;
pub mod partial;
pub mod summary;
pub mod value;

pub use graph::Graph;
