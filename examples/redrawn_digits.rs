//! How well a model reads digits drawn as a user would draw them, with each `--fit`.
//!
//! Each MNIST test digit is redrawn dark-on-white on a 280x280 canvas: its ink scaled so the
//! longer side is 40–90% of the canvas, placed at a random position (off-centre), as a user
//! drawing in a web page or on paper would. The canvas is then prepared by warmstart's image
//! loader with `box` and with `mnist` fitting and classified.
//!
//!     cargo run --release --example redrawn_digits -- runs/pretrain [N] [SEED]

use image::{GrayImage, Luma, imageops};
use rand::{Rng, SeedableRng};
use warmstart::data::prepare::{Fit, Invert, prepare};
use warmstart::data::{LoadOptions, PIXELS, load};

const CANVAS: u32 = 280;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let model = args.get(1).map_or("runs/pretrain", String::as_str);
    let n: usize = args.get(2).map_or(Ok(2000), |s| s.parse())?;
    let seed: u64 = args.get(3).map_or(Ok(1), |s| s.parse())?;
    let device = burn::prelude::Device::flex();
    let (net, meta) = warmstart::checkpoint::load(model.as_ref(), &device)?;
    let mnist = load(&warmstart::bundled::dir("mnist"), &LoadOptions::default())?;
    let test = mnist.test.expect("MNIST has a test set");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let fits = [Fit::Box, Fit::Mnist];
    let mut correct = [0usize; 3];
    for i in 0..n.min(test.len()) {
        let digit = GrayImage::from_raw(28, 28, test.image(i).to_vec()).expect("28x28");
        let canvas = redraw(&digit, &mut rng);
        let label = test.label(i) as usize;
        let mut batch = vec![0f32; 3 * PIXELS];
        warmstart::batch::to_unit(test.image(i), &mut batch[..PIXELS]);
        for (k, fit) in fits.iter().enumerate() {
            let img = image::DynamicImage::ImageLuma8(canvas.clone());
            let px = prepare(&img, Invert::Auto, *fit);
            warmstart::batch::to_unit(&px, &mut batch[(k + 1) * PIXELS..(k + 2) * PIXELS]);
        }
        let probs = warmstart::eval::probabilities(&net, batch, &device);
        let classes = meta.classes.len();
        for (k, c) in correct.iter_mut().enumerate() {
            if warmstart::eval::argmax(&probs[k * classes..(k + 1) * classes]) == label {
                *c += 1;
            }
        }
    }
    let n = n.min(test.len());
    println!("model {model}, {n} MNIST test digits, seed {seed}");
    println!("as stored (28x28):           {:.2}%", pct(correct[0], n));
    println!("redrawn, --fit box:          {:.2}%", pct(correct[1], n));
    println!("redrawn, --fit mnist:        {:.2}%", pct(correct[2], n));
    Ok(())
}

fn pct(c: usize, n: usize) -> f64 {
    100.0 * c as f64 / n.max(1) as f64
}

/// The digit's ink, scaled to 40–90% of the canvas, at a random place, dark on white.
fn redraw(digit: &GrayImage, rng: &mut impl Rng) -> GrayImage {
    let (mut x0, mut y0, mut x1, mut y1) = (28, 28, 0, 0);
    for (x, y, p) in digit.enumerate_pixels() {
        if p.0[0] > 0 {
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
        }
    }
    let ink = imageops::crop_imm(digit, x0, y0, x1 - x0 + 1, y1 - y0 + 1).to_image();
    let (w, h) = ink.dimensions();
    let side = rng.random_range(0.4..0.9) * CANVAS as f32;
    let scale = side / w.max(h) as f32;
    let (nw, nh) = (
        ((w as f32 * scale).round() as u32).max(1),
        ((h as f32 * scale).round() as u32).max(1),
    );
    let big = imageops::resize(&ink, nw, nh, imageops::FilterType::Triangle);
    let ox = rng.random_range(0..=CANVAS - nw);
    let oy = rng.random_range(0..=CANVAS - nh);
    let mut canvas = GrayImage::from_pixel(CANVAS, CANVAS, Luma([255]));
    for (x, y, p) in big.enumerate_pixels() {
        canvas.put_pixel(x + ox, y + oy, Luma([255 - p.0[0]]));
    }
    canvas
}
