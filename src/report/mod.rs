//! Pictures of a run, drawn with `plotters`.

pub mod plot;
