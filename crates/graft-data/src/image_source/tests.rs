use std::io::Cursor;

use image::{DynamicImage, ImageFormat, Rgb, RgbImage};

use super::*;
use crate::image::{Flip, RandomCrop};
use crate::test_util::TempDir;

/// A `w`×`h` image of one colour, encoded as `format`.
fn solid(w: u32, h: u32, colour: [u8; 3], format: ImageFormat) -> Vec<u8> {
    let mut bytes = Cursor::new(vec![]);
    DynamicImage::ImageRgb8(RgbImage::from_pixel(w, h, Rgb(colour)))
        .write_to(&mut bytes, format)
        .unwrap();
    bytes.into_inner()
}

/// Two classes of 3 images each: dark squares in `dark/`, light ones (one a JPEG) in `light/`, plus a stray text
/// file that is not an image.
fn folder() -> TempDir {
    let dir = TempDir::new("images");
    for i in 0..3u8 {
        dir.write(
            &format!("dark/{i}.png"),
            solid(8, 8, [10 * i, 10 * i, 10 * i], ImageFormat::Png),
        );
    }
    dir.write("light/a.png", solid(8, 8, [250, 250, 250], ImageFormat::Png));
    dir.write("light/b.bmp", solid(8, 8, [240, 240, 240], ImageFormat::Bmp));
    dir.write("light/nested/c.JPG", solid(8, 8, [230, 230, 230], ImageFormat::Jpeg));
    dir.write("light/notes.txt", "not an image, and not named like one");
    dir.write(".hidden/x.png", solid(8, 8, [0, 0, 0], ImageFormat::Png));
    dir
}

fn spec(dir: &TempDir) -> ImageSpec {
    ImageSpec::new(&dir.0)
}

#[test]
fn a_folder_of_class_folders_is_read_lazily_with_its_size_and_channels_inferred() {
    let dir = folder();
    let (ds, prep) = read_images(&spec(&dir)).unwrap();
    assert_eq!(ds.class_names().unwrap(), &["dark", "light"]);
    assert_eq!(ds.labels().unwrap(), &[0, 0, 0, 1, 1, 1]);
    // No pixels held: one file id per row.
    assert_eq!(ds.inputs.shape, vec![6, 1]);
    assert_eq!(ds.sample_shape(), vec![1, 8, 8]);
    assert_eq!((prep.size, prep.channels), ([8, 8], 1));
    // A shuffled selection decodes the right files.
    let batch = crate::gather(&ds.select(&[4, 1]), &[0, 1]).unwrap();
    assert_eq!(batch.inputs.shape, vec![2, 1, 8, 8]);
    assert!((batch.inputs.data[0] - 240.0 / 255.0).abs() < 1e-6);
    assert!((batch.inputs.data[64] - 10.0 / 255.0).abs() < 1e-6);
    assert_eq!(batch.labels, Some(vec![1, 0]));
    // The same as decoding every file at once.
    let all = ds.materialized().unwrap();
    assert_eq!(all.inputs.shape, vec![6, 1, 8, 8]);
    assert!(all.images.is_none());
    let files = ds.images.as_ref().unwrap().files.clone();
    assert_eq!(prep.load_files(&files).unwrap(), all.inputs);
}

#[test]
fn sizes_channels_and_normalization_as_asked() {
    let dir = folder();
    let mut s = spec(&dir);
    s.size = Some([4, 6]);
    s.channels = Some(3);
    s.normalize = Some(Normalize::MeanStd {
        mean: vec![0.5; 3],
        std: vec![0.5; 3],
    });
    let (ds, prep) = read_images(&s).unwrap();
    assert_eq!(ds.sample_shape(), vec![3, 4, 6]);
    assert_eq!(prep.value_range(), (-1.0, 1.0));
    let x = crate::gather(&ds, &[0]).unwrap().inputs;
    assert!(x.data.iter().all(|v| (v - (0.0 / 255.0 - 0.5) / 0.5).abs() < 1e-6));
    s.normalize = Some(Normalize::MeanStd {
        mean: vec![0.5],
        std: vec![0.5],
    });
    let err = read_images(&s).unwrap_err();
    assert_eq!(err.location.as_deref(), Some("normalize"));
    s.normalize = Some(Normalize::Named("imagenet".into()));
    s.channels = Some(1);
    assert!(read_images(&s).unwrap_err().message.contains("RGB"));
}

#[test]
fn bad_files_are_named_in_one_error_or_skipped_and_counted() {
    let dir = folder();
    dir.write("dark/broken.png", &solid(8, 8, [0, 0, 0], ImageFormat::Png)[..30]);
    dir.write("light/text.jpg", "hello");
    let err = read_images(&spec(&dir)).unwrap_err();
    assert_eq!(err.file.as_deref(), Some(dir.0.as_path()));
    assert!(
        err.message.starts_with("2 of 8 images cannot be used: "),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("dark/broken.png (damaged or truncated image"),
        "{}",
        err.message
    );
    assert!(err.message.contains("light/text.jpg (not an image"), "{}", err.message);
    assert!(err.message.contains("on_error = \"skip\""), "{}", err.message);
    let mut s = spec(&dir);
    s.on_error = OnError::Skip;
    let (ds, _) = read_images(&s).unwrap();
    assert_eq!(ds.len(), 6);
}

#[test]
fn colour_images_for_a_grey_model_and_mixed_sizes_are_explained() {
    let dir = folder();
    dir.write("light/red.png", solid(8, 8, [255, 0, 0], ImageFormat::Png));
    let mut s = spec(&dir);
    s.channels = Some(1);
    let err = read_images(&s).unwrap_err();
    assert!(
        err.message.contains("light/red.png (a colour image, but channels = 1"),
        "{}",
        err.message
    );
    // Inferred: colour somewhere, so RGB.
    assert_eq!(read_images(&spec(&dir)).unwrap().1.channels, 3);
    dir.write("dark/big.png", solid(16, 8, [0, 0, 0], ImageFormat::Png));
    let err = read_images(&spec(&dir)).unwrap_err();
    assert!(err.message.contains("the images differ in size"), "{}", err.message);
    assert!(err.message.contains("dark/big.png is 16×8"), "{}", err.message);
    assert!(err.message.contains("set size = [height, width]"), "{}", err.message);
}

#[test]
fn folders_without_classes_and_unknown_class_names_are_explained() {
    let dir = TempDir::new("loose");
    dir.write("a.png", solid(4, 4, [0, 0, 0], ImageFormat::Png));
    let err = read_images(&ImageSpec::new(&dir.0)).unwrap_err();
    assert!(
        err.message
            .starts_with("no class folders here (1 images lie loose in it)"),
        "{}",
        err.message
    );
    let dir = folder();
    let mut s = spec(&dir);
    s.classes = Some(vec!["ligth".into()]);
    let err = read_images(&s).unwrap_err();
    assert_eq!(err.location.as_deref(), Some("classes"));
    assert!(err.message.contains("did you mean `light`?"), "{}", err.message);
    s.classes = Some(vec!["light".into(), "dark".into()]);
    let (ds, _) = read_images(&s).unwrap();
    assert_eq!(ds.class_names().unwrap(), &["light", "dark"]);
    assert_eq!(ds.labels().unwrap(), &[0, 0, 0, 1, 1, 1]);
}

#[test]
fn a_csv_of_paths_and_labels() {
    let dir = folder();
    let csv = dir.write(
        "labels.csv",
        "file,label\ndark/0.png,night\nlight/a.png,day\ndark/1.png,night\n",
    );
    let (ds, _) = read_images(&ImageSpec::new(&csv)).unwrap();
    assert_eq!(ds.class_names().unwrap(), &["day", "night"]);
    assert_eq!(ds.labels().unwrap(), &[1, 0, 1]);
    let bad = dir.write("bad.csv", "path,label\ndark/0.png,night\n");
    let err = read_images(&ImageSpec::new(&bad)).unwrap_err();
    assert_eq!(err.location.as_deref(), Some("file_column"));
    assert!(err.message.contains("no column `file`"), "{}", err.message);
    let missing = dir.write("missing.csv", "file,label\ndark/9.png,night\n");
    let err = read_images(&ImageSpec::new(&missing)).unwrap_err();
    assert!(err.message.contains("dark/9.png ("), "{}", err.message);
    assert_eq!(
        list_inputs(&csv, None).unwrap(),
        vec![
            dir.0.join("dark/0.png"),
            dir.0.join("light/a.png"),
            dir.0.join("dark/1.png")
        ]
    );
}

#[test]
fn augmentation_is_for_training_batches_and_repeats_with_seed_and_epoch() {
    let dir = TempDir::new("augment");
    // Gradients, so flips and crops change values.
    for i in 0..4u32 {
        let img = RgbImage::from_fn(16, 16, |x, y| Rgb([(x * 16) as u8, (y * 16) as u8, (i * 60) as u8]));
        let mut bytes = Cursor::new(vec![]);
        DynamicImage::ImageRgb8(img)
            .write_to(&mut bytes, ImageFormat::Png)
            .unwrap();
        dir.write(&format!("c{}/{i}.png", i % 2), bytes.into_inner());
    }
    let mut s = ImageSpec::new(&dir.0);
    s.size = Some([8, 8]);
    s.augment = Some(Augment {
        crop: Some(RandomCrop {
            scale: [0.3, 1.0],
            ratio: [0.75, 1.333],
        }),
        flip: Some(Flip::Horizontal),
        rotation: 20.0,
        brightness: 0.3,
        cutout: 0.25,
        ..Augment::default()
    });
    let (ds, _) = read_images(&s).unwrap();
    let rows = [0, 1, 2, 3];
    let plain = crate::gather(&ds, &rows).unwrap().inputs;
    let e1 = crate::gather_for_training(&ds, &rows, 7, 1).unwrap().inputs;
    assert_ne!(plain, e1);
    assert_eq!(e1, crate::gather_for_training(&ds, &rows, 7, 1).unwrap().inputs);
    assert_ne!(e1, crate::gather_for_training(&ds, &rows, 7, 2).unwrap().inputs);
    assert_ne!(e1, crate::gather_for_training(&ds, &rows, 8, 1).unwrap().inputs);
    // A row's draw depends on its file, not on the batch it came in.
    let alone = crate::gather_for_training(&ds, &[2], 7, 1).unwrap().inputs;
    assert_eq!(alone.data[..], e1.data[2 * 192..3 * 192]);
    // Without an augmentation, training batches are the plain ones.
    let mut s = s.clone();
    s.augment = None;
    let (ds, _) = read_images(&s).unwrap();
    assert_eq!(crate::gather_for_training(&ds, &rows, 7, 1).unwrap().inputs, plain);
}

#[test]
fn arrays_outside_the_trained_range_are_refused_with_a_hint() {
    let p = crate::prepare::Preprocessor::Images(ImagePreprocessing {
        size: [2, 2],
        channels: 1,
        resize: Fit::Stretch,
        mean: vec![0.0],
        std: vec![1.0],
    });
    let ok = Array::new(vec![1, 1, 2, 2], vec![0.0, 0.5, 1.0, 0.2]).unwrap();
    p.check_range(&ok).unwrap();
    let raw = Array::new(vec![1, 1, 2, 2], vec![0.0, 128.0, 255.0, 3.0]).unwrap();
    let err = p.check_range(&raw).unwrap_err();
    assert_eq!(
        err.message,
        "the model was trained on inputs from 0 to 1, but these range from 0 to 255 (raw 0–255 pixels? divide them by \
         255)"
    );
}

#[test]
fn json_inputs_take_base64_files_and_preprocessed_arrays() {
    use base64::Engine;
    let prep = ImagePreprocessing {
        size: [2, 2],
        channels: 1,
        resize: Fit::Stretch,
        mean: vec![0.0],
        std: vec![1.0],
    };
    let p = crate::prepare::Preprocessor::Images(prep);
    let png = base64::engine::general_purpose::STANDARD.encode(solid(4, 4, [255, 255, 255], ImageFormat::Png));
    let items = vec![
        serde_json::json!(png),
        serde_json::json!({ "base64": png }),
        serde_json::json!([[[0.0, 0.5], [0.5, 1.0]]]),
    ];
    let x = p.inputs_from_json(&items, &[1, 2, 2], None).unwrap();
    assert_eq!(x.shape, vec![3, 1, 2, 2]);
    assert_eq!(&x.data[..8], &[1.0; 8]);
    assert_eq!(&x.data[8..], &[0.0, 0.5, 0.5, 1.0]);
    let err = p
        .inputs_from_json(&[serde_json::json!("@@@")], &[1, 2, 2], None)
        .unwrap_err();
    assert_eq!(err.location.as_deref(), Some("inputs[0]"));
    assert!(err.message.starts_with("not base64"), "{}", err.message);
    let err = p
        .inputs_from_json(&[serde_json::json!([[[0.0, 255.0], [0.5, 1.0]]])], &[1, 2, 2], None)
        .unwrap_err();
    assert!(err.message.contains("divide them by 255"), "{}", err.message);
}

#[test]
fn the_spec_reads_from_toml_with_errors_at_their_keys() {
    let parse = |t: &str| -> crate::Result<ImageSpec> {
        let v: toml::Value = toml::from_str(t).unwrap();
        crate::de::parse(&v, "images")
    };
    let s = parse(
        "path = \"x\"\nsize = [32, 32]\nnormalize = \"imagenet\"\nresize = \"crop\"\n\
         augment = { flip = \"horizontal\", crop = { scale = [0.5, 1.0] } }",
    )
    .unwrap();
    assert_eq!(s.size, Some([32, 32]));
    assert_eq!(s.resize, Fit::Crop);
    assert_eq!(s.augment.unwrap().crop.unwrap().ratio, [0.75, 4.0 / 3.0]);
    let err = parse("path = \"x\"\nnormalize = \"imagnet\"").unwrap_err();
    assert!(
        err.to_string().contains("did you mean \"imagenet\"") || err.to_string().contains("imagenet"),
        "{err}"
    );
    let err = parse("path = \"x\"\nagument = {}").unwrap_err();
    assert!(err.to_string().contains("agument"), "{err}");
    let err = parse("path = \"x\"\nnormalize = { mean = [0.5] }").unwrap_err();
    assert!(err.to_string().contains("std"), "{err}");
}

#[test]
fn a_text_source_given_images_says_so() {
    let dir = folder();
    let spec = crate::text::TextSpec {
        path: dir.0.clone(),
        ..serde_json::from_str(r#"{"path":"x"}"#).unwrap()
    };
    let err = crate::text::read_texts(&spec).unwrap_err();
    assert!(err.message.contains("this is an image, not a text"), "{}", err.message);
    assert!(err.file.unwrap().to_string_lossy().ends_with("dark/0.png"));
}
