include!("../memory_x.rs");

fn main() {
    write_memory_x();
}
