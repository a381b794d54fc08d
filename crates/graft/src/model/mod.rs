//! Models: the spec, the graph built from it, its summary and files, and the walks over its parameters (freezing,
//! restoring from another model, layer groups).

pub mod backbone;
pub mod freeze;
pub mod graph;
pub mod groups;
pub mod input_grad;
pub mod io;
pub mod params;
pub mod partial;
pub mod restore;
pub mod spec;
pub mod summary;

pub use graph::Graph;
pub use spec::ModelSpec;
