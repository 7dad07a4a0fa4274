// Give every binary and test a search path for libtorch, so nothing needs LD_LIBRARY_PATH.
// DT_RPATH (--disable-new-dtags) rather than RUNPATH: it also applies to libtorch's own dependencies.
fn main() {
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,--disable-new-dtags,-rpath,{lib}");
        // A CUDA libtorch: keep libtorch_cuda even under --as-needed, or CUDA is silently not detected.
        if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }
    println!("cargo:rerun-if-env-changed=LIBTORCH");
}
