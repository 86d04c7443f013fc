// Entry points defined in gauss_raster_project.cpp and bound in gauss_raster.cpp: declared once
// here so that both files are checked against the same signatures.
#pragma once

#include <torch/extension.h>

#include <vector>

std::vector<torch::Tensor> project_forward(torch::Tensor means, torch::Tensor quats,
                                           torch::Tensor scales, torch::Tensor opacities,
                                           torch::Tensor coefs, torch::Tensor K,
                                           torch::Tensor cfw, int64_t width, int64_t height,
                                           double near, double far, double eps2d,
                                           int64_t n_threads);
std::vector<torch::Tensor> project_backward(torch::Tensor means, torch::Tensor quats,
                                            torch::Tensor scales, torch::Tensor coefs,
                                            torch::Tensor K, torch::Tensor cfw, int64_t width,
                                            int64_t height, double near, double far,
                                            double eps2d, torch::Tensor g_means2d,
                                            torch::Tensor g_conics, torch::Tensor g_feats,
                                            int64_t n_threads);
