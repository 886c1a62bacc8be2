//! A WASI command: it exports `wasi:cli/run`, none of the ringshare worlds.
fn main() {
    println!("I am not a ringshare plugin");
}
