// A search path for libtorch in every fuzz target, so they replay without LD_LIBRARY_PATH (as ../build.rs does
// for sdscope's own binaries).
fn main() {
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,--disable-new-dtags,-rpath,{lib}");
    }
    println!("cargo:rerun-if-env-changed=LIBTORCH");
}
