//! The fuzz targets' shared code: `checks`, what must hold for each decoder's inputs.

pub mod checks;
