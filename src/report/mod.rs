//! What a run shows: training curves, the confusion matrix, the most confident mistakes, a preview
//! of the augmentation, and one self-contained HTML page with all of them.

pub mod figures;
pub mod html;
pub mod plot;
pub mod run;
