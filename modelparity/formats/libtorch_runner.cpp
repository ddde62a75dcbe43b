// The LibTorch C++ runner: loads a TorchScript file (torch::jit::load) or an AOTInductor package
// (torch::inductor::AOTIModelPackageLoader, what a C++ server loads from aoti_compile_and_package),
// reads named inputs from .npy files, runs forward under NoGradGuard, writes every output tensor
// (tuples and lists flattened, in order) as .npy, and prints one JSON line: load time, first-call
// time, and per-call latency after warm-up, measured here, in C++, around the forward call alone.
//
//   libtorch_runner torchscript|aoti MODEL OUT_DIR WARMUP REPEAT INPUT.npy [INPUT.npy ...]
//
// .npy support: little-endian float32/float64/int32/int64/uint8/bool, C order (what numpy writes).

#include <ATen/Parallel.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/script.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

struct DType {
  const char* descr;
  at::ScalarType type;
};

const DType kTypes[] = {{"<f4", at::kFloat}, {"<f8", at::kDouble}, {"<i4", at::kInt},
                        {"<i8", at::kLong},  {"|u1", at::kByte},   {"|b1", at::kBool}};

at::Tensor read_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  char magic[8];
  in.read(magic, 8);
  if (std::memcmp(magic, "\x93NUMPY", 6) != 0) throw std::runtime_error(path + " is not a .npy file");
  uint32_t header_len = 0;
  if (magic[6] == 1) {
    uint16_t len16 = 0;
    in.read(reinterpret_cast<char*>(&len16), 2);
    header_len = len16;
  } else {
    in.read(reinterpret_cast<char*>(&header_len), 4);
  }
  std::string header(header_len, ' ');
  in.read(&header[0], header_len);
  if (header.find("'fortran_order': True") != std::string::npos)
    throw std::runtime_error(path + ": Fortran order is not supported");
  auto descr_at = header.find("'descr': '") + 10;
  std::string descr = header.substr(descr_at, header.find('\'', descr_at) - descr_at);
  at::ScalarType type = at::kFloat;
  bool known = false;
  for (const auto& t : kTypes) {
    if (descr == t.descr) { type = t.type; known = true; }
  }
  if (!known) throw std::runtime_error(path + ": unsupported dtype " + descr);
  auto open = header.find('(', header.find("'shape'"));
  std::string dims = header.substr(open + 1, header.find(')', open) - open - 1);
  std::vector<int64_t> shape;
  std::stringstream parts(dims);
  std::string part;
  while (std::getline(parts, part, ',')) {
    if (part.find_first_not_of(' ') != std::string::npos) shape.push_back(std::stoll(part));
  }
  auto tensor = torch::empty(shape, torch::TensorOptions().dtype(type));
  in.read(static_cast<char*>(tensor.data_ptr()), tensor.nbytes());
  if (!in) throw std::runtime_error(path + ": truncated data");
  return tensor;
}

void write_npy(const std::string& path, const at::Tensor& value) {
  auto tensor = value.contiguous().cpu();
  const char* descr = nullptr;
  for (const auto& t : kTypes) {
    if (tensor.scalar_type() == t.type) descr = t.descr;
  }
  if (descr == nullptr) tensor = tensor.to(at::kFloat), descr = "<f4";
  std::ostringstream dict;
  dict << "{'descr': '" << descr << "', 'fortran_order': False, 'shape': (";
  for (auto size : tensor.sizes()) dict << size << ", ";
  dict << "), }";
  std::string header = dict.str();
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  std::ofstream out(path, std::ios::binary);
  out.write("\x93NUMPY\x01\x00", 8);
  uint16_t len16 = static_cast<uint16_t>(header.size());
  out.write(reinterpret_cast<const char*>(&len16), 2);
  out.write(header.data(), header.size());
  out.write(static_cast<const char*>(tensor.data_ptr()), tensor.nbytes());
}

void flatten(const c10::IValue& value, std::vector<at::Tensor>& out) {
  if (value.isTensor()) {
    out.push_back(value.toTensor());
  } else if (value.isTuple()) {
    for (const auto& item : value.toTupleRef().elements()) flatten(item, out);
  } else if (value.isList()) {
    for (const auto& item : value.toListRef()) flatten(item, out);
  } else {
    throw std::runtime_error("output of type " + value.tagKind() + " is not a tensor, tuple or list");
  }
}

using Forward = std::function<std::vector<at::Tensor>(const std::vector<at::Tensor>&)>;

// The model's forward, whichever file it is: a TorchScript module's outputs flattened to tensors,
// or the AOTInductor package's own list.
Forward load_model(const std::string& kind, const std::string& path) {
  if (kind == "aoti") {
    auto loader = std::make_shared<torch::inductor::AOTIModelPackageLoader>(path);
    return [loader](const std::vector<at::Tensor>& inputs) { return loader->run(inputs); };
  }
  if (kind != "torchscript") throw std::runtime_error("unknown model kind " + kind + " (torchscript or aoti)");
  auto module = std::make_shared<torch::jit::script::Module>(torch::jit::load(path));
  module->eval();
  return [module](const std::vector<at::Tensor>& inputs) {
    std::vector<at::Tensor> outputs;
    flatten(module->forward(std::vector<c10::IValue>(inputs.begin(), inputs.end())), outputs);
    return outputs;
  };
}

double ms_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 7) {
    std::cerr << "usage: " << argv[0]
              << " torchscript|aoti MODEL OUT_DIR WARMUP REPEAT INPUT.npy [INPUT.npy ...]\n";
    return 2;
  }
  try {
    torch::NoGradGuard no_grad;
    auto started = std::chrono::steady_clock::now();
    auto forward = load_model(argv[1], argv[2]);
    double load_ms = ms_since(started);
    std::string out_dir = argv[3];
    int warmup = std::stoi(argv[4]), repeat = std::stoi(argv[5]);
    std::vector<at::Tensor> inputs;
    for (int i = 6; i < argc; ++i) inputs.push_back(read_npy(argv[i]));
    started = std::chrono::steady_clock::now();
    auto outputs = forward(inputs);
    double first_ms = ms_since(started);
    for (int i = 0; i < warmup; ++i) forward(inputs);
    std::vector<double> latencies;
    for (int i = 0; i < repeat; ++i) {
      started = std::chrono::steady_clock::now();
      forward(inputs);
      latencies.push_back(ms_since(started));
    }
    for (size_t i = 0; i < outputs.size(); ++i) write_npy(out_dir + "/output_" + std::to_string(i) + ".npy", outputs[i]);
    std::cout << "{\"outputs\": " << outputs.size() << ", \"load_ms\": " << load_ms << ", \"first_call_ms\": "
              << first_ms << ", \"threads\": " << at::get_num_threads() << ", \"latency_ms\": [";
    for (size_t i = 0; i < latencies.size(); ++i) std::cout << (i ? ", " : "") << latencies[i];
    std::cout << "]}" << std::endl;
  } catch (const std::exception& error) {
    std::cerr << "libtorch_runner: " << error.what() << std::endl;
    return 1;
  }
  return 0;
}
