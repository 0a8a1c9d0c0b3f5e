//! Placeholder for the review API's shared state (the lead's `crate::review` replaces it on
//! merge): the review store the pages read.

use std::sync::Arc;

/// What the review routes and pages share.
#[derive(Debug, Clone)]
pub struct ReviewState {
    /// The queue and the verdicts.
    pub store: Arc<dyn vigil_store::ReviewStore>,
}
