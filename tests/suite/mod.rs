mod calls_mesh;
mod calls_prop;
mod calls_ws;
mod chat_mesh;
mod chat_ws;
mod cli;
mod login_mesh;
mod login_ws;
