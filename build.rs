//! Build script: compiles the C++ shim against the libtorch that torch-sys found and bakes an rpath to it into
//! every binary, so `spotrun` and the test executables run without LD_LIBRARY_PATH.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=shim/spotrun_shim.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    // torch-sys (`links = "tch"`) exports the directory holding libtorch*.so.
    let lib = match std::env::var("DEP_TCH_LIBTORCH_LIB") {
        Ok(dir) => PathBuf::from(dir),
        Err(_) => panic!("torch-sys did not report its libtorch directory; run scripts/setup.sh and export LIBTORCH"),
    };
    let root = lib.parent().map(PathBuf::from).unwrap_or_else(|| lib.clone());
    cc::Build::new()
        .cpp(true)
        .file("shim/spotrun_shim.cpp")
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .flag_if_supported("-Wno-unused-parameter")
        .warnings(false)
        .compile("spotrun_shim");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        // Without this the linker drops libtorch_cuda (no symbol is used directly) and CUDA never registers.
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
}
