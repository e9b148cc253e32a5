//! Reference peer client for the Waypost suite.
//!
//! Not implemented yet: see the project's open issues.
