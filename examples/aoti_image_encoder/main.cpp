// Run the image encoder of a SAM 2 model, exported with `sam2-fast export aoti`, from C++.
//
//   sam2_encode image_encoder.pt2 photo.ppm out_dir/
//
// reads a binary PPM (P6, 8-bit RGB: `convert photo.jpg photo.ppm`, or PIL's
// `Image.save("photo.ppm")`), resizes and normalises it as the model expects (the package's
// metadata holds the image size, mean and std), runs the package, and writes the three
// outputs as raw little-endian float32 files: out_dir/image_embed.f32 [1, 256, S/16, S/16],
// out_dir/high_res_feats_0.f32 [1, 32, S/4, S/4], out_dir/high_res_feats_1.f32
// [1, 64, S/8, S/8] (the shapes are printed). These are what prompt_decoder.pt2 takes.
#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <cstdint>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

// the next header token of a PPM file, skipping whitespace and # comments
std::string ppm_token(std::istream& in) {
  std::string token;
  while (token.empty()) {
    int c = in.get();
    if (c == EOF) throw std::runtime_error("truncated PPM header");
    if (c == '#') {
      std::string comment;
      std::getline(in, comment);
    } else if (!std::isspace(c)) {
      token.push_back(static_cast<char>(c));
      while (in.peek() != EOF && !std::isspace(in.peek())) token.push_back(static_cast<char>(in.get()));
    }
  }
  return token;
}

// [H, W, 3] uint8 RGB from a binary PPM file
at::Tensor read_ppm(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  if (ppm_token(in) != "P6") throw std::runtime_error(path + ": not a binary PPM (P6) file");
  const int64_t width = std::stoll(ppm_token(in));
  const int64_t height = std::stoll(ppm_token(in));
  const int64_t maxval = std::stoll(ppm_token(in));
  if (maxval != 255) throw std::runtime_error(path + ": only 8-bit PPM files are read");
  in.get();  // the single whitespace byte before the pixels
  at::Tensor rgb = at::empty({height, width, 3}, at::kByte);
  in.read(reinterpret_cast<char*>(rgb.data_ptr<uint8_t>()), rgb.numel());
  if (in.gcount() != rgb.numel()) throw std::runtime_error(path + ": truncated pixel data");
  return rgb;
}

std::vector<double> floats(const std::string& text) {
  std::vector<double> values;
  std::stringstream stream(text);
  for (std::string item; std::getline(stream, item, ',');) values.push_back(std::stod(item));
  return values;
}

// RGB [H, W, 3] uint8 -> the normalised [1, 3, S, S] float32 input: bilinear resize with
// antialiasing (align_corners=False) to S x S, / 255, minus mean, divided by std
at::Tensor preprocess(const at::Tensor& rgb, int64_t size, const std::vector<double>& mean,
                      const std::vector<double>& std) {
  at::Tensor image = rgb.permute({2, 0, 1}).unsqueeze(0).to(at::kFloat).div(255.0);
  if (image.size(2) != size || image.size(3) != size) {
    image = at::_upsample_bilinear2d_aa(image, {size, size}, /*align_corners=*/false);
  }
  at::Tensor m = at::tensor(mean, at::kDouble).to(at::kFloat).view({1, 3, 1, 1});
  at::Tensor s = at::tensor(std, at::kDouble).to(at::kFloat).view({1, 3, 1, 1});
  return ((image - m) / s).contiguous();
}

void write_f32(const at::Tensor& tensor, const std::string& path) {
  at::Tensor values = tensor.to(at::kCPU, at::kFloat).contiguous();
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(values.data_ptr<float>()), values.numel() * sizeof(float));
  if (!out) throw std::runtime_error("cannot write " + path);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: " << argv[0] << " image_encoder.pt2 image.ppm out_dir\n";
    return 2;
  }
  try {
    torch::inductor::AOTIModelPackageLoader loader(argv[1]);
    auto metadata = loader.get_metadata();
    const int64_t size = std::stoll(metadata.at("image_size"));
    at::Tensor image = preprocess(read_ppm(argv[2]), size, floats(metadata.at("mean")),
                                  floats(metadata.at("std")));
    // a package compiled for CUDA takes CUDA inputs: move the image where the model is
    if (metadata.count("device") && metadata.at("device") != "cpu") image = image.to(at::Device(metadata.at("device")));
    std::vector<at::Tensor> outputs = loader.run({image});
    const char* names[] = {"image_embed", "high_res_feats_0", "high_res_feats_1"};
    if (outputs.size() != 3) throw std::runtime_error("expected 3 outputs, the package gave " + std::to_string(outputs.size()));
    for (size_t i = 0; i < outputs.size(); ++i) {
      const std::string path = std::string(argv[3]) + "/" + names[i] + ".f32";
      write_f32(outputs[i], path);
      std::cout << names[i] << " " << outputs[i].sizes() << " -> " << path << "\n";
    }
  } catch (const std::exception& e) {  // c10::Error is a std::exception too
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
