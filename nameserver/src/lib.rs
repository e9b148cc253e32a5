//! Jami-compatible name registrar.
//!
//! Not implemented yet: see the project's open issues.
