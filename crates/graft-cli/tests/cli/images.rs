//! Folders of image files, as users have them: training from class folders of PNG/JPEG/BMP/WebP/GIF files with
//! augmentation, predicting on a folder (file names in the rows), evaluating on another folder, and the files and
//! arrays that cannot be used, each explained in one line.

use std::path::Path;

use image::{DynamicImage, ImageFormat, Rgb, RgbImage};

use super::{expect_error, graft, predict, stderr, write};

/// Deterministic noise in 0..n.
fn noise(state: &mut u64, n: u32) -> u32 {
    *state = state
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    ((*state >> 33) % n as u64) as u32
}

/// A 20×16 image of class `k`: horizontal stripes (0), vertical stripes (1) or a bright centre (2), in a random
/// tint with noise.
fn picture(k: usize, state: &mut u64) -> RgbImage {
    let phase = noise(state, 4);
    let tint = [noise(state, 80) + 120, noise(state, 80) + 120, noise(state, 80) + 120];
    RgbImage::from_fn(20, 16, |x, y| {
        let on = match k {
            0 => (y + phase) % 4 < 2,
            1 => (x + phase) % 4 < 2,
            _ => (6..14).contains(&x) && (4..12).contains(&y),
        };
        let base = if on { 1.0 } else { 0.15 };
        let mut px = [0u8; 3];
        for (c, v) in px.iter_mut().enumerate() {
            *v = ((tint[c] as f32 * base) as u32 + noise(state, 30)).min(255) as u8;
        }
        Rgb(px)
    })
}

const CLASSES: [&str; 3] = ["horizontal", "vertical", "centre"];
const FORMATS: [(ImageFormat, &str); 5] = [
    (ImageFormat::Png, "png"),
    (ImageFormat::Jpeg, "jpg"),
    (ImageFormat::Bmp, "bmp"),
    (ImageFormat::WebP, "webp"),
    (ImageFormat::Gif, "gif"),
];

/// `per_class` images of each class under `dir/CLASS/`, in every format in turn.
pub(super) fn image_folder(dir: &Path, per_class: usize, seed: u64) {
    let mut state = seed;
    for (k, class) in CLASSES.iter().enumerate() {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        for i in 0..per_class {
            let (format, ext) = FORMATS[i % FORMATS.len()];
            DynamicImage::ImageRgb8(picture(k, &mut state))
                .save_with_format(dir.join(class).join(format!("{i:03}.{ext}")), format)
                .unwrap();
        }
    }
}

fn experiment(dir: &Path, extra: &str) -> String {
    let train = dir.join("train").display().to_string();
    let test = dir.join("test").display().to_string();
    write(
        dir,
        "images.toml",
        &format!(
            r#"
[data]
dataset = {{ images = {{ path = "{train}", size = [16, 16], resize = "crop"{extra},
             augment = {{ flip = "horizontal", translate = 0.05, brightness = 0.2 }} }} }}
test = {{ images = {{ path = "{test}" }} }}
split = {{ validation = 0.2, stratify = true }}
[model]
layers = [
  {{ conv2d = {{ filters = 8, kernel = 3, padding = "same", activation = "relu" }} }},
  {{ max_pool2d = {{ size = 2 }} }},
  {{ conv2d = {{ filters = 16, kernel = 3, padding = "same", activation = "relu" }} }},
  {{ global_avg_pool2d = {{}} }},
  {{ dense = {{ units = 3 }} }},
]
[train]
epochs = 12
batch_size = 16
optimizer = {{ adam = {{ lr = 1e-2 }} }}
loss = "sparse_categorical_crossentropy"
metrics = ["accuracy"]
"#
        ),
    )
}

#[test]
fn a_folder_of_image_files_trains_predicts_and_evaluates() {
    let dir = super::workdir("images");
    image_folder(&dir.join("train"), 40, 1);
    image_folder(&dir.join("test"), 10, 2);
    let exp = experiment(&dir, "");
    let run = dir.join("run").display().to_string();
    let o = graft(&["train", &exp, "--out", &run, "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("run/metrics.json")).unwrap()).unwrap();
    let accuracy = metrics["test"]["accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.9, "test accuracy {accuracy}");
    // The preprocessing travels with the model: size, channels, fit, normalization.
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("run/preprocess.json")).unwrap()).unwrap();
    let images = &manifest["preprocessor"]["images"];
    assert_eq!(images["size"], serde_json::json!([16, 16]));
    assert_eq!(images["channels"], 3);
    assert_eq!(images["resize"], "crop");
    assert_eq!(manifest["inputs"][0]["shape"], serde_json::json!([3, 16, 16]));

    // Augmentation is drawn from the seed: the same run again gives the same numbers.
    let again = dir.join("again").display().to_string();
    let o = graft(&["train", &exp, "--out", &again, "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(dir.join("run/model.safetensors")).unwrap(),
        std::fs::read(dir.join("again/model.safetensors")).unwrap()
    );

    // Predict on a folder: one row per file, named relative to the folder, mostly right.
    let test = dir.join("test").display().to_string();
    let out = dir.join("predictions.csv").display().to_string();
    let o = predict(&run, &test, &out);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&out).unwrap();
    let mut lines = text.lines();
    assert!(lines.next().unwrap().starts_with("file,class,"));
    let rows: Vec<(String, String)> = lines
        .map(|l| {
            let mut f = l.split(',');
            (f.next().unwrap().to_string(), f.next().unwrap().to_string())
        })
        .collect();
    assert_eq!(rows.len(), 30);
    assert_eq!(rows[0].0, "centre/000.png");
    let right = rows
        .iter()
        .filter(|(file, class)| file.starts_with(&format!("{class}/")))
        .count();
    assert!(right >= 27, "{right} of 30 right");
    // One file, as JSON lines on stdout.
    let one = dir.join("test/vertical/001.jpg").display().to_string();
    let o = predict(&run, &one, "-");
    assert!(o.status.success(), "{}", stderr(&o));
    let row: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(row["file"], one.as_str());
    // eval on a labelled folder: the classes matched by name.
    let o = graft(&["eval", "--model", &run, "--data", &test]);
    assert!(o.status.success(), "{}", stderr(&o));
    let eval: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!((eval["accuracy"].as_f64().unwrap() - accuracy).abs() < 1e-9, "{eval}");

    // Raw 0–255 pixels for a model trained on 0–1 values.
    let raw = dir.join("raw.npy");
    graft::data::write_npy_f32(
        &raw,
        &graft::data::Array::new(vec![1, 3, 16, 16], vec![200.0; 768]).unwrap(),
    )
    .unwrap();
    let err = expect_error(predict(&run, raw.to_str().unwrap(), "-"));
    assert!(
        err.contains("trained on inputs from 0 to 1") && err.contains("divide them by 255"),
        "{err}"
    );
}

#[test]
fn bad_image_files_are_named_or_skipped_when_asked() {
    let dir = super::workdir("bad-images");
    image_folder(&dir.join("train"), 8, 3);
    image_folder(&dir.join("test"), 2, 4);
    let png = std::fs::read(dir.join("train/centre/000.png")).unwrap();
    std::fs::write(dir.join("train/centre/cut.png"), &png[..png.len() / 2]).unwrap();
    std::fs::write(dir.join("train/vertical/readme.jpg"), "not a picture").unwrap();
    let exp = experiment(&dir, "");
    let run = dir.join("run").display().to_string();
    let err = expect_error(graft(&["train", &exp, "--out", &run]));
    assert!(err.contains("data.dataset: 2 of 26 images cannot be used"), "{err}");
    assert!(err.contains("centre/cut.png (damaged or truncated image"), "{err}");
    assert!(err.contains("vertical/readme.jpg (not an image"), "{err}");
    assert!(err.contains("on_error = \"skip\""), "{err}");

    let exp = experiment(&dir, r#", on_error = "skip""#);
    let o = graft(&["train", &exp, "--out", &run, "--overwrite"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("skipped 2 of 26 images"), "{}", stderr(&o));

    // A text source pointed at images says what they are.
    let texts = write(
        &dir,
        "texts.toml",
        &format!(
            "[data]\ndataset = {{ text = {{ path = \"{}\" }} }}\n[model]\nlayers = [{{ dense = {{ units = 3 }} }}]\n\
             [train]\nepochs = 1\nloss = \"sparse_categorical_crossentropy\"\n",
            dir.join("test").display()
        ),
    );
    let err = expect_error(graft(&["train", &texts, "--out", &run, "--overwrite"]));
    assert!(err.contains("this is an image, not a text"), "{err}");
}

#[test]
fn mixup_blends_training_batches_repeats_with_the_seed_and_refuses_token_ids() {
    let dir = super::workdir("mixup");
    image_folder(&dir.join("train"), 30, 5);
    image_folder(&dir.join("test"), 8, 6);
    let exp = experiment(&dir, "");
    let text = std::fs::read_to_string(&exp).unwrap() + "mixup = { alpha = 0.4 }\n";
    let exp = write(&dir, "mixup.toml", &text);
    let mut weights = vec![];
    for name in ["run", "again"] {
        let run = dir.join(name).display().to_string();
        let o = graft(&["train", &exp, "--out", &run, "--quiet"]);
        assert!(o.status.success(), "{}", stderr(&o));
        weights.push(std::fs::read(dir.join(name).join("model.safetensors")).unwrap());
    }
    assert_eq!(weights[0], weights[1], "the same seed draws the same blends");
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("run/metrics.json")).unwrap()).unwrap();
    let accuracy = metrics["test"]["accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.8, "test accuracy {accuracy}");
    // Without mixup the same experiment trains other weights.
    let plain = dir.join("plain").display().to_string();
    let o = graft(&["train", &experiment(&dir, ""), "--out", &plain, "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_ne!(weights[0], std::fs::read(dir.join("plain/model.safetensors")).unwrap());

    // Token ids (a model that starts with an embedding) cannot blend.
    let (x, y) = (dir.join("ids.npy"), dir.join("labels.npy"));
    let ids: Vec<f32> = (0..20 * 6).map(|i| (1 + i % 9) as f32).collect();
    graft::data::write_npy_f32(&x, &graft::data::Array::new(vec![20, 6], ids).unwrap()).unwrap();
    let labels: Vec<f32> = (0..20).map(|i| (i % 2) as f32).collect();
    graft::data::write_npy_f32(&y, &graft::data::Array::new(vec![20], labels).unwrap()).unwrap();
    let ids = write(
        &dir,
        "ids.toml",
        &format!(
            "[data]\ndataset = {{ npy = {{ x = \"{}\", y = \"{}\" }} }}\n[model]\nlayers = [{{ name = \"emb\", \
             embedding = {{ input_dim = 10, output_dim = 4 }} }}, {{ global_avg_pool1d = {{}} }}, \
             {{ dense = {{ units = 2 }} }}]\n[train]\nepochs = 1\nloss = \"sparse_categorical_crossentropy\"\n\
             mixup = {{ alpha = 0.2 }}\n",
            x.display(),
            y.display()
        ),
    );
    let err = expect_error(graft(&["train", &ids, "--out", &dir.join("ids").display().to_string()]));
    assert!(
        err.contains("train.mixup: mixup blends float inputs, but input 'input' holds token ids (read by layer 'emb')"),
        "{err}"
    );
}
