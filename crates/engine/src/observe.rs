//! What monitoring sees of images, computed offline exactly as serving computes it: the
//! bundle's pipeline (observing), its backend, its decision rule. The reference profile
//! (`vigil bundle create --reference`, the trainer) and `vigil drift report --input` use it,
//! so a reference is never measured differently from the traffic it is compared with.

use vigil_core::bundle::Manifest;
use vigil_core::decision::decide;
use vigil_core::monitor::Observation;

use crate::preprocess::{Pipeline, Tiled};
use crate::{Backend, Batch, Error, Result};

/// Runs one image (or whole film: its most positive tile, as the server's verdict) through
/// `pipeline` and `backend`, and gives what monitoring sees of it. `pipeline` should be
/// [`Pipeline::observing`] (else the statistics are missing).
pub fn observe(
    manifest: &Manifest,
    pipeline: &Pipeline,
    backend: &mut dyn Backend,
    encoded: &[u8],
    max_batch: usize,
) -> Result<Observation> {
    let Tiled { tiles, stats, .. } = pipeline.run_tiles(encoded)?;
    let probs_name = &manifest.roles.probabilities;
    let mut best: Option<(f32, Observation)> = None;
    for chunk in tiles.chunks(max_batch.max(1)) {
        let refs: Vec<_> = chunk.iter().collect();
        let outputs = backend.run(&Batch::stack(&refs)?)?;
        let probs = outputs
            .get(probs_name)
            .ok_or_else(|| Error::Run(format!("the model gave no output {probs_name:?}")))?;
        let embedding = manifest
            .roles
            .embedding
            .as_ref()
            .and_then(|e| outputs.get(e));
        for row in 0..chunk.len() {
            let p = probs.item(row);
            let d = decide(&manifest.decision, &manifest.model.labels, p).ok_or_else(|| {
                Error::Run(format!(
                    "row {row} of {probs_name:?} is not a decision: {p:?}"
                ))
            })?;
            if best.as_ref().is_some_and(|(score, _)| *score >= d.score) {
                continue;
            }
            let predicted = manifest
                .model
                .labels
                .iter()
                .position(|l| *l == d.label)
                .unwrap_or(0);
            best = Some((
                d.score,
                Observation {
                    stats,
                    embedding: embedding.map(|e| e.item(row).to_vec()),
                    probabilities: p.to_vec(),
                    predicted,
                    confidence: d.confidence,
                    ood_distance: None,
                    out_of_distribution: false,
                },
            ));
        }
    }
    best.map(|(_, o)| o)
        .ok_or_else(|| Error::Preprocess("the image gave no tile to observe".into()))
}
