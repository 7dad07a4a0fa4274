//! Image files of every format the `image` crate reads here (PNG, JPEG, WebP, BMP, TIFF): the first byte picks
//! the file extension (which decides the decoder) and how the image is loaded, the rest is the file.
#![no_main]
mod common;

use libfuzzer_sys::fuzz_target;
use sdscope::image_io::{load_image, load_square};

const EXTENSIONS: [&str; 8] = ["png", "jpg", "webp", "bmp", "tiff", "jpeg", "tif", "gif"];

fuzz_target!(init: common::init(), |data: &[u8]| {
    let Some((&selector, file)) = data.split_first() else { return };
    let ext = EXTENSIONS[usize::from(selector & 7)];
    let path = common::file(&format!("image.{ext}"), file);
    let result = match selector >> 3 & 7 {
        0 => load_image(&path, 8),
        1 => load_image(&path, 1),
        2 => load_image(&path, 64),
        3 => load_image(&path, 0),
        4 => load_square(&path, 8),
        5 => load_square(&path, 64),
        6 => load_square(&path, 0),
        _ => load_square(&path, 12),
    };
    if let Ok(image) = result {
        let (h, w) = image.size;
        assert_eq!(image.pixels.size(), [1, 3, h, w]);
    }
});
