//! Open Inference Protocol `infer`: `POST /v2/models/{name}[/versions/{version}]/infer`.
//!
//! One input, the model's image input, either
//! - `FP32`, laid out as the model input (`[N, C, H, W]`), its shape checked against the
//!   manifest, run through `Infer::classify_tensor`; or
//! - `BYTES`, `[N]` encoded images, each run through the bundle's own preprocessing with
//!   `Infer::classify` (a tiled film gives one output row per tile).
//!
//! Values come as JSON `data` or through the binary tensor extension (the body is the JSON
//! header of `Inference-Header-Content-Length` bytes, then each binary input's bytes in
//! order, sized by its `binary_data_size` parameter; a BYTES element is a 4-byte
//! little-endian length and then its bytes). JSON strings are not binary-safe, so encoded
//! images are accepted only through the extension. Outputs are FP32, as JSON `data` or, when
//! asked for (`binary_data_output`, or an output's `binary_data`), as binary after the JSON.

use std::collections::BTreeMap;

use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use vigil_core::types::{ModelName, ModelVersion};
use vigil_engine::{Batch, OutputTensor, Outputs};
use vigil_runtime::{Classified, Timings};

use crate::routes::predict::timing_headers;
use crate::routes::{check_version, deployment, model_name};
use crate::{ApiError, AppState, CorrelationId, RequestId};

/// The binary tensor extension's header: the length of the JSON part of the body.
const HEADER_LENGTH: HeaderName = HeaderName::from_static("inference-header-content-length");

/// One input tensor of an infer request.
#[derive(Debug, Deserialize)]
pub struct InferInputRequest {
    /// Which model input it is.
    pub name: String,
    /// Its dimensions.
    pub shape: Vec<i64>,
    /// `FP32` (a tensor laid out as the model input) or `BYTES` (encoded images).
    pub datatype: String,
    /// Protocol parameters; `binary_data_size` says its data is in the binary part.
    #[serde(default)]
    pub parameters: Option<serde_json::Map<String, serde_json::Value>>,
    /// The values, flat or nested in row-major order (absent when binary).
    #[serde(default)]
    pub data: Option<serde_json::Value>,
}

/// An output the client asks for.
#[derive(Debug, Deserialize)]
pub struct InferOutputRequest {
    /// The output's name.
    pub name: String,
    /// Protocol parameters; `binary_data: true` asks for it in the binary part.
    #[serde(default)]
    pub parameters: Option<serde_json::Map<String, serde_json::Value>>,
}

/// `POST /v2/models/{name}[/versions/{version}]/infer`
#[derive(Debug, Deserialize)]
pub struct InferRequest {
    /// Echoed in the answer.
    #[serde(default)]
    pub id: Option<String>,
    /// Protocol parameters; `binary_data_output: true` asks for every output in binary.
    #[serde(default)]
    pub parameters: Option<serde_json::Map<String, serde_json::Value>>,
    /// Exactly one tensor: the model's image input.
    pub inputs: Vec<InferInputRequest>,
    /// The outputs wanted; every output when absent.
    #[serde(default)]
    pub outputs: Option<Vec<InferOutputRequest>>,
}

/// One output tensor of an infer answer.
#[derive(Debug, Serialize)]
pub struct InferOutputResponse {
    /// The output's name.
    pub name: String,
    /// Its dimensions, batch first.
    pub shape: Vec<usize>,
    /// Always `FP32`.
    pub datatype: &'static str,
    /// `binary_data_size` when the values are in the binary part.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Value>,
    /// The values, flat, row-major (absent when binary).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Vec<f32>>,
}

/// The answer to an infer request.
#[derive(Debug, Serialize)]
pub struct InferResponse {
    /// The model.
    pub model_name: String,
    /// The version that answered.
    pub model_version: String,
    /// The request's `id`, when it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The outputs asked for.
    pub outputs: Vec<InferOutputResponse>,
}

/// `POST /v2/models/{name}/infer`
pub async fn infer(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Extension(id): Extension<RequestId>,
    Extension(corr): Extension<CorrelationId>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    run_infer(&state, &name, None, (&id, &corr), &headers, body?).await
}

/// `POST /v2/models/{name}/versions/{version}/infer`
pub async fn infer_versioned(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    Extension(id): Extension<RequestId>,
    Extension(corr): Extension<CorrelationId>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    run_infer(&state, &name, Some(&version), (&id, &corr), &headers, body?).await
}

/// Parses the request, runs it, and shapes the outputs asked for.
async fn run_infer(
    state: &AppState,
    name: &str,
    version: Option<&str>,
    (id, corr): (&RequestId, &CorrelationId),
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (req, binary) = split_body(headers, body)?;
    let name = model_name(name)?;
    let infer = state.infer();
    let d = deployment(infer, &name, version)?;
    let m = d.manifest();
    let all_binary = flag(req.parameters.as_ref(), "binary_data_output");
    // (output name, in binary?) for every output wanted.
    let wanted: Vec<(String, bool)> = match &req.outputs {
        None => m
            .outputs
            .iter()
            .map(|o| (o.name.clone(), all_binary))
            .collect(),
        Some(outs) => outs
            .iter()
            .map(|o| {
                if !m.outputs.iter().any(|s| s.name == o.name) {
                    return Err(ApiError::invalid(format!(
                        "model {name} has no output {:?}",
                        o.name
                    )));
                }
                let binary = all_binary || flag(o.parameters.as_ref(), "binary_data");
                Ok((o.name.clone(), binary))
            })
            .collect::<Result<_, _>>()?,
    };
    let expected = &m.image_input().name;
    let [input]: [InferInputRequest; 1] = req.inputs.try_into().map_err(|v: Vec<_>| {
        ApiError::invalid(format!(
            "expected exactly one input ({expected:?}), got {}",
            v.len()
        ))
    })?;
    if input.name != *expected {
        return Err(ApiError::invalid(format!(
            "unknown input {:?}; the model's input is {expected:?}",
            input.name
        )));
    }
    drop(d);
    let (version_served, outputs, timings) = match decode_input(&input, binary)? {
        Decoded::Tensor(batch) => {
            let c = infer.classify_tensor(&name, batch, None).await?;
            crate::review::record_prediction(state, &id.0, corr, &c, None).await?;
            (c.version, c.outputs, c.timings)
        }
        Decoded::Images(images) => classify_images(state, &name, (id, corr), images).await?,
    };
    check_version(&name, &version_served, version)?;
    respond(
        InferResponse {
            model_name: name.to_string(),
            model_version: version_served.to_string(),
            id: req.id,
            outputs: Vec::new(),
        },
        outputs,
        &wanted,
        &timings,
    )
}

/// An input's values once every size the client declared has been checked against the bytes
/// it sent: an FP32 tensor, or encoded images.
#[derive(Debug)]
pub enum Decoded {
    /// `FP32`: laid out as the model input (the runtime checks the shape against the model).
    Tensor(Batch),
    /// `BYTES`: encoded images, each run through the bundle's preprocessing.
    Images(Vec<Bytes>),
}

/// Parses an infer request body (JSON, or JSON and binary through the extension, as
/// `headers` say) down to its single input's values, with no model at hand: the whole of what
/// the server reads from an infer request before any model sees it. Every refusal is a 4xx
/// [`ApiError`]. The fuzz target `v2_request` drives it.
pub fn parse_body(headers: &HeaderMap, body: Bytes) -> Result<Decoded, ApiError> {
    let (req, binary) = split_body(headers, body)?;
    let [input]: [InferInputRequest; 1] = req.inputs.try_into().map_err(|v: Vec<_>| {
        ApiError::invalid(format!("expected exactly one input, got {}", v.len()))
    })?;
    decode_input(&input, binary)
}

/// One input's values, by its datatype.
fn decode_input(input: &InferInputRequest, binary: Bytes) -> Result<Decoded, ApiError> {
    let data = InputData::of(input, binary)?;
    match input.datatype.as_str() {
        "FP32" => Ok(Decoded::Tensor(fp32_batch(
            &input.name,
            &input.shape,
            data,
        )?)),
        "BYTES" => Ok(Decoded::Images(encoded_images(&input.shape, data)?)),
        other => Err(ApiError::invalid(format!(
            "input {:?} has datatype {other:?}; FP32 (a tensor) or BYTES (encoded images) is \
             accepted",
            input.name
        ))),
    }
}

/// The JSON request and the binary part after it (empty without the extension).
fn split_body(headers: &HeaderMap, body: Bytes) -> Result<(InferRequest, Bytes), ApiError> {
    let json_len = match headers.get(HEADER_LENGTH) {
        None => body.len(),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&n| n <= body.len())
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "{HEADER_LENGTH} must be a length within the body ({} bytes)",
                    body.len()
                ))
            })?,
    };
    let mut json = body;
    let binary = json.split_off(json_len);
    let req = serde_json::from_slice(&json)
        .map_err(|e| ApiError::invalid(format!("the request is not a valid infer request: {e}")))?;
    Ok((req, binary))
}

/// Whether a boolean parameter is set.
fn flag(params: Option<&serde_json::Map<String, serde_json::Value>>, key: &str) -> bool {
    params
        .and_then(|p| p.get(key))
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false)
}

/// Where an input's values are.
enum InputData<'a> {
    Json(&'a serde_json::Value),
    Binary(Bytes),
}

impl<'a> InputData<'a> {
    fn of(input: &'a InferInputRequest, binary: Bytes) -> Result<InputData<'a>, ApiError> {
        let size = input
            .parameters
            .as_ref()
            .and_then(|p| p.get("binary_data_size"))
            .map(|v| {
                v.as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| ApiError::invalid("binary_data_size must be a byte count"))
            })
            .transpose()?;
        match (size, &input.data) {
            (Some(n), _) if n == binary.len() => Ok(InputData::Binary(binary)),
            (Some(n), _) => Err(ApiError::invalid(format!(
                "input {:?} declares {n} binary bytes, but {} follow the JSON header",
                input.name,
                binary.len()
            ))),
            (None, Some(data)) => Ok(InputData::Json(data)),
            (None, None) => Err(ApiError::invalid(format!(
                "input {:?} has neither data nor binary_data_size",
                input.name
            ))),
        }
    }
}

/// An FP32 tensor of `shape`; the runtime checks the shape against the model.
///
/// Every size the client declared is checked against the bytes it actually sent before
/// anything proportional to it is allocated: a shape of 2^26 images with a few bytes of data
/// used to reserve gigabytes and abort the process. Values must be finite (a NaN or an
/// infinity is the client's error, named with the input).
fn fp32_batch(input: &str, shape: &[i64], data: InputData<'_>) -> Result<Batch, ApiError> {
    let dims: [usize; 4] = shape
        .iter()
        .map(|&d| usize::try_from(d).ok())
        .collect::<Option<Vec<_>>>()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "FP32 input {input:?}: shape {shape:?} must be 4 non-negative dimensions, as \
                 the model's"
            ))
        })?;
    let declared = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "FP32 input {input:?}: shape {shape:?} holds no values or more than can be \
                 addressed"
            ))
        })?;
    let sent = match &data {
        InputData::Json(v) => count_leaves(v),
        InputData::Binary(b) if b.len() % 4 != 0 => {
            return Err(ApiError::invalid(format!(
                "FP32 input {input:?}: {} binary bytes are not whole FP32 values",
                b.len()
            )));
        }
        InputData::Binary(b) => b.len() / 4,
    };
    if sent != declared {
        return Err(ApiError::invalid(format!(
            "FP32 input {input:?}: shape {shape:?} holds {declared} values, but {sent} were sent"
        )));
    }
    let mut values = Vec::with_capacity(declared);
    match data {
        InputData::Json(v) => flatten(v, &mut values)?,
        InputData::Binary(b) => values.extend(
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        ),
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(ApiError::invalid(format!(
            "FP32 input {input:?}: value {i} is {}; only finite numbers are accepted",
            values[i]
        )));
    }
    Ok(Batch {
        shape: dims,
        data: values,
    })
}

/// How many values a flat or nested JSON array holds (anything not an array counts as one,
/// and [`flatten`] refuses what is not a number).
fn count_leaves(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(items) => items.iter().map(count_leaves).sum(),
        _ => 1,
    }
}

/// Collects the numbers of a flat or nested JSON array, in order.
fn flatten(v: &serde_json::Value, out: &mut Vec<f32>) -> Result<(), ApiError> {
    match v {
        serde_json::Value::Array(items) => items.iter().try_for_each(|i| flatten(i, out)),
        serde_json::Value::Number(n) => {
            let x = n
                .as_f64()
                .ok_or_else(|| ApiError::invalid(format!("{n} is not an FP32 value")))?;
            // Narrowing to f32 is what FP32 means (a number beyond its range becomes an
            // infinity, which the caller refuses).
            #[allow(clippy::cast_possible_truncation)]
            out.push(x as f32);
            Ok(())
        }
        other => Err(ApiError::invalid(format!(
            "FP32 data must be numbers, found {other}"
        ))),
    }
}

/// Encoded images in a BYTES tensor: each a 4-byte little-endian length, then its bytes.
fn encoded_images(shape: &[i64], data: InputData<'_>) -> Result<Vec<Bytes>, ApiError> {
    let InputData::Binary(mut b) = data else {
        return Err(ApiError::invalid(
            "BYTES (encoded images) must come through the binary tensor extension: JSON \
             strings are not binary-safe",
        ));
    };
    let mut images = Vec::new();
    while !b.is_empty() {
        if b.len() < 4 {
            return Err(ApiError::invalid("a BYTES element's length is cut short"));
        }
        let len = b.split_to(4);
        let n = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if n > b.len() {
            return Err(ApiError::invalid(format!(
                "a BYTES element declares {n} bytes, but only {} remain",
                b.len()
            )));
        }
        images.push(b.split_to(n));
    }
    let declared = shape
        .iter()
        .map(|&d| usize::try_from(d).ok())
        .try_fold(1usize, |acc, d| d.map(|d| acc.saturating_mul(d)));
    if declared != Some(images.len()) || images.is_empty() {
        return Err(ApiError::invalid(format!(
            "BYTES shape {shape:?} does not match the {} images sent",
            images.len()
        )));
    }
    Ok(images)
}

/// Classifies each encoded image (concurrently, so they can share engine batches) and
/// stacks their output rows in request order.
async fn classify_images(
    state: &AppState,
    name: &ModelName,
    (id, corr): (&RequestId, &CorrelationId),
    images: Vec<Bytes>,
) -> Result<(ModelVersion, Outputs, Timings), ApiError> {
    let many = images.len() > 1;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, img) in images.into_iter().enumerate() {
        let (infer, name) = (state.infer().clone(), name.clone());
        tasks.spawn(async move {
            let result = infer.classify(&name, img.clone(), None).await;
            (i, img, result)
        });
    }
    let mut done: Vec<(usize, Bytes, Classified)> = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (i, img, result) = joined.map_err(|e| ApiError::Kind {
            kind: vigil_core::ErrorKind::Internal,
            message: format!("an image's task failed: {e}"),
        })?;
        done.push((i, img, result?));
    }
    done.sort_by_key(|(i, _, _)| *i);
    for (i, img, c) in &done {
        // Each image is its own prediction in the log: `<request id>.<index>`.
        let image_id = if many {
            format!("{}.{i}", id.0)
        } else {
            id.0.clone()
        };
        crate::review::record_prediction(state, &image_id, corr, c, Some(img)).await?;
    }
    let done: Vec<(usize, Classified)> = done.into_iter().map(|(i, _, c)| (i, c)).collect();
    let version = done
        .first()
        .map(|(_, c)| c.version.clone())
        .ok_or_else(|| ApiError::invalid("no image to classify"))?;
    if done.iter().any(|(_, c)| c.version != version) {
        return Err(ApiError::Kind {
            kind: vigil_core::ErrorKind::Unavailable,
            message: "the model was redeployed during the request; retry".into(),
        });
    }
    let timings = done
        .iter()
        .map(|(_, c)| c.timings)
        .fold(Timings::default(), |a, t| Timings {
            preprocess: a.preprocess.max(t.preprocess),
            queue: a.queue.max(t.queue),
            inference: a.inference.max(t.inference),
            total: a.total.max(t.total),
        });
    let mut stacked: Outputs = BTreeMap::new();
    for (_, c) in done {
        for (out, t) in c.outputs {
            let entry = stacked.entry(out).or_insert_with(|| OutputTensor {
                shape: {
                    let mut s = t.shape.clone();
                    if let Some(first) = s.first_mut() {
                        *first = 0;
                    }
                    s
                },
                data: Vec::new(),
            });
            if let Some(rows) = entry.shape.first_mut() {
                *rows += t.shape.first().copied().unwrap_or(0);
            }
            entry.data.extend_from_slice(&t.data);
        }
    }
    Ok((version, stacked, timings))
}

/// The JSON answer, with binary outputs after it when any were asked for.
fn respond(
    mut head: InferResponse,
    mut outputs: Outputs,
    wanted: &[(String, bool)],
    timings: &Timings,
) -> Result<Response, ApiError> {
    let mut binary = BytesMut::new();
    for (name, in_binary) in wanted {
        let Some(t) = outputs.remove(name) else {
            continue;
        };
        if *in_binary {
            let size = t.data.len() * 4;
            for v in &t.data {
                binary.extend_from_slice(&v.to_le_bytes());
            }
            head.outputs.push(InferOutputResponse {
                name: name.clone(),
                shape: t.shape,
                datatype: "FP32",
                parameters: Some(serde_json::json!({ "binary_data_size": size })),
                data: None,
            });
        } else {
            head.outputs.push(InferOutputResponse {
                name: name.clone(),
                shape: t.shape,
                datatype: "FP32",
                parameters: None,
                data: Some(t.data),
            });
        }
    }
    let json = serde_json::to_vec(&head).map_err(|e| ApiError::Kind {
        kind: vigil_core::ErrorKind::Internal,
        message: format!("cannot render the answer: {e}"),
    })?;
    let mut response = if binary.is_empty() {
        let mut r = json.into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    } else {
        let json_len = json.len();
        let mut body = BytesMut::from(&json[..]);
        body.extend_from_slice(&binary);
        let mut r = body.freeze().into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        r.headers_mut()
            .insert(HEADER_LENGTH, HeaderValue::from(json_len));
        r
    };
    timing_headers(response.headers_mut(), timings);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_and_flat_data_flatten_alike_and_strings_are_refused() {
        let mut a = Vec::new();
        flatten(&serde_json::json!([[1, 2], [3.5, 4]]), &mut a).expect("numbers");
        assert_eq!(a, vec![1.0, 2.0, 3.5, 4.0]);
        let mut b = Vec::new();
        assert!(flatten(&serde_json::json!(["x"]), &mut b).is_err());
    }

    fn binary(values: &[f32]) -> Bytes {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn declared_sizes_are_checked_against_the_bytes_sent_before_allocating() {
        // A shape of 2^26 images with 16 bytes of data used to reserve 4 TiB and abort.
        let few = binary(&[0.0; 4]);
        let err = fp32_batch(
            "x",
            &[67_108_864, 1, 128, 128],
            InputData::Binary(few.clone()),
        )
        .unwrap_err();
        assert_eq!(err.status(), axum::http::StatusCode::BAD_REQUEST);
        assert!(err.to_string().contains("but 4 were sent"), "{err}");
        let json = serde_json::json!([1, 2, 3, 4]);
        let err = fp32_batch("x", &[67_108_864, 1, 128, 128], InputData::Json(&json)).unwrap_err();
        assert!(err.to_string().contains("but 4 were sent"), "{err}");
        // A shape whose product overflows is refused, not wrapped or panicked on.
        let err = fp32_batch(
            "x",
            &[i64::MAX, i64::MAX, 2, 2],
            InputData::Binary(few.clone()),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("more than can be addressed"),
            "{err}"
        );
        let ok = fp32_batch("x", &[1, 1, 2, 2], InputData::Binary(few)).expect("fits");
        assert_eq!((ok.shape, ok.data.len()), ([1, 1, 2, 2], 4));
    }

    #[test]
    fn non_finite_values_are_the_clients_error_and_name_the_input() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let err = fp32_batch(
                "image",
                &[1, 1, 1, 2],
                InputData::Binary(binary(&[0.5, bad])),
            )
            .unwrap_err();
            assert_eq!(err.status(), axum::http::StatusCode::BAD_REQUEST);
            let msg = err.to_string();
            assert!(
                msg.contains("\"image\"") && msg.contains("value 1"),
                "{msg}"
            );
        }
        // A JSON number beyond f32's range narrows to an infinity: refused too.
        let json = serde_json::json!([1e39]);
        assert!(fp32_batch("image", &[1, 1, 1, 1], InputData::Json(&json)).is_err());
    }

    #[test]
    fn bytes_elements_are_length_prefixed_and_must_match_the_shape() {
        let mut b = Vec::new();
        for item in [&b"ab"[..], b"xyz"] {
            b.extend_from_slice(&u32::try_from(item.len()).expect("small").to_le_bytes());
            b.extend_from_slice(item);
        }
        let images =
            encoded_images(&[2], InputData::Binary(Bytes::from(b.clone()))).expect("two images");
        assert_eq!(images, vec![Bytes::from("ab"), Bytes::from("xyz")]);
        assert!(encoded_images(&[3], InputData::Binary(Bytes::from(b.clone()))).is_err());
        b.truncate(b.len() - 1);
        assert!(encoded_images(&[2], InputData::Binary(Bytes::from(b))).is_err());
        let json = serde_json::json!(["ab"]);
        assert!(encoded_images(&[1], InputData::Json(&json)).is_err());
    }
}
