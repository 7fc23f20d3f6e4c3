"""The course seed's reference training code, as written, lightly wrapped into functions for scripts/bench.py.

Source: /work/shared/seed (Hjorth-Jensen, "Deep generative models", week of April 15-19, 2024). This module is the
benchmark's baseline only; genlib never imports it. The wrapping changes no arithmetic:

* the module-level loaders become functions that take the data root (or an offline stand-in dataset) instead of
  './data' with download=True;
* `for epoch in range(N)` loops stop when the benchmark's `keep_going(n_images)` callback says the time budget is
  spent; it is called once per step, after the step, exactly where the seed's loop body ends;
* the RBM and VAE code is the seed's PyTorch (Variable, F.sigmoid, torch.distributions, DataLoader with ToTensor);
* the DCGAN, TensorFlow in the seed, is ported to PyTorch layer for layer (Sequential models equal to the Keras
  layers with Keras's defaults: Glorot-uniform kernels, LeakyReLU alpha 0.3, BatchNormalization eps 1e-3 and
  momentum 0.99, Adam eps 1e-7) with the seed's one-forward-two-tapes `train_step`: both losses from one forward
  pass, then the gradient of each loss with respect to its own player's variables, then both `apply_gradients`.
  Data are preprocessed once with numpy as the seed does ((x - 127.5) / 127.5) and fed through a shuffled
  DataLoader over a TensorDataset, PyTorch's counterpart of `tf.data.Dataset.from_tensor_slices(...).shuffle(60000)
  .batch(256)`. `tf.function` has no eager PyTorch counterpart; the port runs eagerly, as genlib does.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.utils.data
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from torch.autograd import Variable
from torchvision import datasets, transforms

KeepGoing = Callable[[int], bool]  # called after every step with the batch's image count; False stops training


class UInt8Images(torch.utils.data.Dataset):
    """An offline stand-in for torchvision's MNIST: uint8 (N, 28, 28) images returned as PIL images through
    `transform`, exactly as `torchvision.datasets.MNIST.__getitem__` does (so ToTensor/Normalize cost the same)."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, transform=None) -> None:
        self.data, self.targets, self.transform = images, targets, transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        from PIL import Image

        img, target = Image.fromarray(self.data[index].numpy(), mode="L"), int(self.targets[index])
        if self.transform is not None:
            img = self.transform(img)
        return img, target


def mnist_or_standin(root: str | None, transform, standin: tuple[torch.Tensor, torch.Tensor] | None = None):
    """torchvision's MNIST training set from `root` (no download), or the stand-in (images, labels) when given."""
    if standin is not None:
        return UInt8Images(standin[0], standin[1], transform=transform)
    return datasets.MNIST(root, train=True, download=False, transform=transform)


# =====================================================================================================================
# RBM (the seed's "Code for RBMs using PyTorch")
# =====================================================================================================================

class RBM(nn.Module):
    def __init__(self,
        n_vis=784,
        n_hin=500,
        k=5):
        super(RBM, self).__init__()
        self.W = nn.Parameter(torch.randn(n_hin,n_vis)*1e-2)
        self.v_bias = nn.Parameter(torch.zeros(n_vis))
        self.h_bias = nn.Parameter(torch.zeros(n_hin))
        self.k = k

    def sample_from_p(self,p):
        return F.relu(torch.sign(p - Variable(torch.rand(p.size()))))

    def v_to_h(self,v):
        p_h = F.sigmoid(F.linear(v,self.W,self.h_bias))
        sample_h = self.sample_from_p(p_h)
        return p_h,sample_h

    def h_to_v(self,h):
        p_v = F.sigmoid(F.linear(h,self.W.t(),self.v_bias))
        sample_v = self.sample_from_p(p_v)
        return p_v,sample_v

    def forward(self,v):
        pre_h1,h1 = self.v_to_h(v)

        h_ = h1
        for _ in range(self.k):
            pre_v_, v_ = self.h_to_v(h_)
            pre_h_, h_ = self.v_to_h(v_)

        return v, v_

    def free_energy(self, v):
        vbias_term = v.mv(self.v_bias)
        wx_b = F.linear(v, self.W, self.h_bias)
        hidden_term = wx_b.exp().add(1).log().sum(1)
        return (-hidden_term - vbias_term).mean()


def rbm_train_loader(root: str | None, standin=None, batch_size: int = 64):
    """The seed's `train_loader`: MNIST through ToTensor, batch 64, no shuffle."""
    return torch.utils.data.DataLoader(
        mnist_or_standin(root, transforms.Compose([transforms.ToTensor()]), standin),
        batch_size=batch_size
    )


def train_rbm(train_loader, keep_going: KeepGoing, epochs: int = 10, verbose: bool = False) -> RBM:
    """The seed's RBM training loop (CD-1 by autograd of the free-energy difference, SGD 0.1)."""
    rbm = RBM(k=1)
    train_op = optim.SGD(rbm.parameters(), 0.1)

    for epoch in range(epochs):
        loss_ = []
        for _, (data, target) in enumerate(train_loader):
            data = Variable(data.view(-1, 784))
            sample_data = data.bernoulli()

            v, v1 = rbm(sample_data)
            loss = rbm.free_energy(v) - rbm.free_energy(v1)
            loss_.append(loss.data)
            train_op.zero_grad()
            loss.backward()
            train_op.step()
            if not keep_going(data.shape[0]):
                return rbm

        if verbose:
            print("Training loss for {} epoch: {}".format(epoch, np.mean(loss_)))
    return rbm


# =====================================================================================================================
# VAE (the seed's "Code in PyTorch for VAEs")
# =====================================================================================================================

class Encoder(torch.nn.Module):
    def __init__(self, D_in, H, latent_size):
        super(Encoder, self).__init__()
        self.linear1 = torch.nn.Linear(D_in, H)
        self.linear2 = torch.nn.Linear(H, H)
        self.enc_mu = torch.nn.Linear(H, latent_size)
        self.enc_log_sigma = torch.nn.Linear(H, latent_size)

    def forward(self, x):
        x = F.relu(self.linear1(x))
        x = F.relu(self.linear2(x))
        mu = self.enc_mu(x)
        log_sigma = self.enc_log_sigma(x)
        sigma = torch.exp(log_sigma)
        return torch.distributions.Normal(loc=mu, scale=sigma)


class Decoder(torch.nn.Module):
    def __init__(self, D_in, H, D_out):
        super(Decoder, self).__init__()
        self.linear1 = torch.nn.Linear(D_in, H)
        self.linear2 = torch.nn.Linear(H, D_out)

    def forward(self, x):
        x = F.relu(self.linear1(x))
        mu = torch.tanh(self.linear2(x))
        return torch.distributions.Normal(mu, torch.ones_like(mu))


class VAE(torch.nn.Module):
    def __init__(self, encoder, decoder):
        super(VAE, self).__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, state):
        q_z = self.encoder(state)
        z = q_z.rsample()
        return self.decoder(z), q_z


def vae_dataset(root: str | None, standin=None):
    """The seed's `mnist`: ToTensor then Normalize(0.5, 1), i.e. pixels in [-0.5, 0.5]."""
    transform = transforms.Compose(
        [transforms.ToTensor(),
         # Normalize the images to be -0.5, 0.5
         transforms.Normalize(0.5, 1)]
    )
    return mnist_or_standin(root, transform, standin)


def train_vae(mnist, keep_going: KeepGoing, num_epochs: int = 100, verbose: bool = False) -> VAE:
    """The seed's VAE training loop: 784-512-512-8, batch 128, Adam 1e-3, shuffled DataLoader."""
    input_dim = 28 * 28
    batch_size = 128
    learning_rate = 0.001
    hidden_size = 512
    latent_size = 8

    if torch.cuda.is_available():
        device = torch.device('cuda')
    else:
        device = torch.device('cpu')

    dataloader = torch.utils.data.DataLoader(
        mnist, batch_size=batch_size,
        shuffle=True,
        pin_memory=torch.cuda.is_available())

    encoder = Encoder(input_dim, hidden_size, latent_size)
    decoder = Decoder(latent_size, hidden_size, input_dim)

    vae = VAE(encoder, decoder).to(device)

    optimizer = optim.Adam(vae.parameters(), lr=learning_rate)
    for epoch in range(num_epochs):
        for data in dataloader:
            inputs, _ = data
            inputs = inputs.view(-1, input_dim).to(device)
            optimizer.zero_grad()
            p_x, q_z = vae(inputs)
            log_likelihood = p_x.log_prob(inputs).sum(-1).mean()
            kl = torch.distributions.kl_divergence(
                q_z,
                torch.distributions.Normal(0, 1.)
            ).sum(-1).mean()
            loss = -(log_likelihood - kl)
            loss.backward()
            optimizer.step()
            l = loss.item()
            if not keep_going(inputs.shape[0]):
                return vae
        if verbose:
            print(epoch, l, log_likelihood.item(), kl.item())
    return vae


# =====================================================================================================================
# DCGAN (the seed's TensorFlow code, ported to PyTorch layer for layer)
# =====================================================================================================================

BUFFER_SIZE = 60000
BATCH_SIZE = 256
noise_dimension = 100
KERAS_BN_EPS = 1e-3  # layers.BatchNormalization() default epsilon
KERAS_BN_MOMENTUM = 0.01  # Keras momentum 0.99 == PyTorch momentum 0.01
KERAS_LEAKY_ALPHA = 0.3  # layers.LeakyReLU() default alpha
KERAS_ADAM_EPS = 1e-7  # tf.keras.optimizers.Adam default epsilon


def _glorot(model: nn.Module) -> nn.Module:
    """Keras's default initialisers: Glorot-uniform kernels, zero biases."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


def generator_model() -> nn.Sequential:
    """The seed's generator_model(), Keras layer for layer (NCHW: Reshape((7, 7, 256)) becomes Unflatten to (256, 7, 7);
    Conv2DTranspose 'same' with stride 2 becomes padding 2, output_padding 1)."""
    model = nn.Sequential(
        nn.Linear(noise_dimension, 7 * 7 * BATCH_SIZE, bias=False),  # layers.Dense(7*7*BATCH_SIZE, use_bias=False)
        nn.BatchNorm1d(7 * 7 * BATCH_SIZE, eps=KERAS_BN_EPS, momentum=KERAS_BN_MOMENTUM),
        nn.LeakyReLU(KERAS_LEAKY_ALPHA),
        nn.Unflatten(1, (BATCH_SIZE, 7, 7)),  # layers.Reshape((7, 7, BATCH_SIZE))
        nn.ConvTranspose2d(BATCH_SIZE, 128, 5, stride=1, padding=2, bias=False),
        nn.BatchNorm2d(128, eps=KERAS_BN_EPS, momentum=KERAS_BN_MOMENTUM),
        nn.LeakyReLU(KERAS_LEAKY_ALPHA),
        nn.ConvTranspose2d(128, 64, 5, stride=2, padding=2, output_padding=1, bias=False),
        nn.BatchNorm2d(64, eps=KERAS_BN_EPS, momentum=KERAS_BN_MOMENTUM),
        nn.LeakyReLU(KERAS_LEAKY_ALPHA),
        nn.ConvTranspose2d(64, 1, 5, stride=2, padding=2, output_padding=1, bias=False),
        nn.Tanh(),  # activation='tanh'
    )
    return _glorot(model)


def discriminator_model() -> nn.Sequential:
    """The seed's discriminator_model(), Keras layer for layer ('same' with stride 2 and kernel 5 is padding 2)."""
    model = nn.Sequential(
        nn.Conv2d(1, 64, 5, stride=2, padding=2),
        nn.LeakyReLU(KERAS_LEAKY_ALPHA),
        nn.Dropout(0.3),
        nn.Conv2d(64, 128, 5, stride=2, padding=2),
        nn.LeakyReLU(KERAS_LEAKY_ALPHA),
        nn.Dropout(0.3),
        nn.Flatten(),
        nn.Linear(128 * 7 * 7, 1),
    )
    return _glorot(model)


def gan_dataset(train_images: np.ndarray):
    """The seed's preprocessing, once, with numpy ((x - 127.5) / 127.5 in float32), then NHWC -> NCHW for PyTorch, and
    tf.data's shuffle(60000).batch(256) as a shuffled DataLoader over a TensorDataset (last batch kept, as tf.data)."""
    train_images = np.reshape(train_images, (train_images.shape[0], 28, 28, 1)).astype('float32')
    # we normalize between -1 and 1
    train_images = (train_images - 127.5) / 127.5
    nchw = np.ascontiguousarray(np.transpose(train_images, (0, 3, 1, 2)))  # (N, 1, 28, 28)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(nchw)),
                                       batch_size=BATCH_SIZE, shuffle=True)


def train_gan(dataset, keep_going: KeepGoing, epochs: int = 30):
    """The seed's `train` and `train_step`: one forward pass, two 'tapes', both Adam(1e-4) steps."""
    generator = generator_model()
    discriminator = discriminator_model()
    generator.train()  # generator(noise, training=True)
    discriminator.train()  # discriminator(images, training=True)

    cross_entropy = nn.BCEWithLogitsLoss()  # tf.keras.losses.BinaryCrossentropy(from_logits=True)
    generator_optimizer = optim.Adam(generator.parameters(), 1e-4, eps=KERAS_ADAM_EPS)
    discriminator_optimizer = optim.Adam(discriminator.parameters(), 1e-4, eps=KERAS_ADAM_EPS)

    def generator_loss(fake_output):
        # Keras's cross_entropy(y_true, y_pred) is PyTorch's cross_entropy(input, target) with the arguments swapped
        loss = cross_entropy(fake_output, torch.ones_like(fake_output))
        return loss

    def discriminator_loss(real_output, fake_output):
        real_loss = cross_entropy(real_output, torch.ones_like(real_output))
        fake_loss = cross_entropy(fake_output, torch.zeros_like(fake_output))
        total_loss = real_loss + fake_loss
        return total_loss

    gen_vars = list(generator.parameters())  # generator.trainable_variables
    disc_vars = list(discriminator.parameters())  # discriminator.trainable_variables

    def apply_gradients(optimizer, grads_and_vars):
        for g, v in grads_and_vars:
            v.grad = g
        optimizer.step()

    def train_step(images):
        noise = torch.randn([BATCH_SIZE, noise_dimension])

        # with tf.GradientTape() as gen_tape, tf.GradientTape() as disc_tape:
        generated_images = generator(noise)

        real_output = discriminator(images)
        fake_output = discriminator(generated_images)

        gen_loss = generator_loss(fake_output)
        disc_loss = discriminator_loss(real_output, fake_output)

        gradients_of_generator = torch.autograd.grad(gen_loss, gen_vars, retain_graph=True)
        gradients_of_discriminator = torch.autograd.grad(disc_loss, disc_vars)
        apply_gradients(generator_optimizer, zip(gradients_of_generator, gen_vars))
        apply_gradients(discriminator_optimizer, zip(gradients_of_discriminator, disc_vars))

        return gen_loss.detach(), disc_loss.detach()

    generator_loss_list = []
    discriminator_loss_list = []
    for epoch in range(epochs):
        for (image_batch,) in dataset:
            gen_loss, disc_loss = train_step(image_batch)
            generator_loss_list.append(gen_loss.numpy())
            discriminator_loss_list.append(disc_loss.numpy())
            if not keep_going(image_batch.shape[0]):
                return generator, discriminator
    return generator, discriminator
