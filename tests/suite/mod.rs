mod calls_mesh;
mod cli;
mod login_mesh;
mod login_ws;
