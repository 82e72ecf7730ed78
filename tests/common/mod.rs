#![allow(dead_code)]

pub mod headless;
pub mod mesh;
pub mod net;
