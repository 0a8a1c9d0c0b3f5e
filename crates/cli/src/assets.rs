//! Files compiled into the binary so `vigil demo` and `vigil doctor` work anywhere, with no
//! download and no checkout: the small reference model and six real weld tiles (GDXray,
//! research and education use only; see testdata/weld/README.md for the licence and citation).

/// The small reference inspection CNN (random weights; input `[N,1,128,128]`).
pub const WELDNET_S_ONNX: &[u8] = include_bytes!("../../../testdata/weldnet-s.onnx");

/// The weld model the repository ships (a packed bundle, see models/README.md): trained by
/// `vigil train` on the GDXray development tiles; `make weld-model` reproduces it.
pub const SHIPPED_WELD_MODEL: &[u8] = include_bytes!("../../../models/weldnet.tar");

/// The preprocessing declared for weld tiles.
pub const WELD_PREPROCESS: &str = include_str!("../../../testdata/weld-preprocess.toml");

/// Real weld radiograph tiles: (file name, expert label, PNG bytes).
pub const WELD_TILES: &[(&str, &str, &[u8])] = &[
    (
        "RRT-106R_x0064_y0227.png",
        "defect",
        include_bytes!("../../../testdata/weld/RRT-106R_x0064_y0227.png"),
    ),
    (
        "RRT-106R_x0128_y0227.png",
        "defect",
        include_bytes!("../../../testdata/weld/RRT-106R_x0128_y0227.png"),
    ),
    (
        "RRT-106R_x0192_y0227.png",
        "defect",
        include_bytes!("../../../testdata/weld/RRT-106R_x0192_y0227.png"),
    ),
    (
        "RRT-106R_x0000_y0035.png",
        "no_defect",
        include_bytes!("../../../testdata/weld/RRT-106R_x0000_y0035.png"),
    ),
    (
        "RRT-106R_x0000_y0099.png",
        "no_defect",
        include_bytes!("../../../testdata/weld/RRT-106R_x0000_y0099.png"),
    ),
    (
        "RRT-106R_x0064_y0035.png",
        "no_defect",
        include_bytes!("../../../testdata/weld/RRT-106R_x0064_y0035.png"),
    ),
];

/// One whole digitised weld film (GDXray bam5, 3512 x 366 px, 8-bit), for tiled scoring.
pub const WELD_FILM: &[u8] = include_bytes!("../../../testdata/weld/films/bam5.png");

/// Preprocessing that scores a whole film tile by tile (128 px tiles, half overlapping).
pub const FILM_PREPROCESS: &str = "\
[[preprocess]]
op = \"decode\"

[[preprocess]]
op = \"grey\"

[[preprocess]]
op = \"tile\"
size = 128
stride = 64

[[preprocess]]
op = \"standardize\"

[[preprocess]]
op = \"layout\"
order = \"nchw\"
";
