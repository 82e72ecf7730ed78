#![allow(dead_code)]

pub mod mesh;
pub mod net;
