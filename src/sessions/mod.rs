//! The platform's sessions collection (Mongoose model `Session`), which vcmetrics reads and, for
//! the one named data migration, writes: the schema's validation rules as server-side
//! expressions ([`rules`]), the "add video call fields" migration ([`migration`]), the live
//! gauges' queries ([`gauges`]). Pure: the
//! store runs what is built here.

pub mod gauges;
pub mod migration;
pub mod rules;
pub mod storage;
