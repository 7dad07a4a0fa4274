//! Noise schedules. Extraction needs only the forward (noising) process; samplers come with generation.

pub mod noise;

pub use noise::NoiseSchedule;
