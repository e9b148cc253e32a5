//! OpenDHT proxy REST API with push notifications.
//!
//! Not implemented yet: see the project's open issues.
