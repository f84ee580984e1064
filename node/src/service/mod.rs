//! gRPC services (`quiver.v1`), plus the conversions and error mapping they share.

pub mod collections;
pub mod convert;
pub mod points;
mod status;

pub use collections::CollectionsService;
pub use points::PointsService;
