"""The architecture: token layout, hierarchical adapter, dropping, and reference
implementations.
"""
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from layouts import source_model

from spatialgeo_core.config import GeometryTowerConfig, SpatialGeoConfig, tiny
from spatialgeo_core.errors import ConfigError
from spatialgeo_core.geometry_tower import DinoVisionTransformer
from spatialgeo_core.model import IGNORE_INDEX, SpatialGeoForCausalLM, causal_lm_loss


def _batch(cfg, n_text=6, seed=0, batch=1):
    g = torch.Generator().manual_seed(seed)
    px = torch.randn(batch, 3, cfg.clip.image_size, cfg.clip.image_size, generator=g)
    ids = torch.randint(3, cfg.llm.vocab_size, (batch, n_text + cfg.num_visual_tokens),
                        generator=g)
    ids[:, 2:2 + cfg.num_visual_tokens] = cfg.image_token_id
    return px, ids


@pytest.fixture(scope="module")
def model():
    return source_model(tiny())


def test_visual_tokens_twice_the_patches_even_clip_odd_geometry(model):
    cfg = model.cfg
    px, _ = _batch(cfg)
    with torch.no_grad():
        v = model.encode_images(px)
        sem = model.clip_adapter(model.clip_tower(px))
        geo = model.geo_adapter(model.geo_tower(px))
    assert cfg.num_patches == (cfg.clip.image_size // cfg.clip.patch_size) ** 2 == 16
    assert v.shape == (1, 2 * cfg.num_patches, cfg.llm.hidden_size)
    assert torch.equal(v[:, 0::2], sem) and torch.equal(v[:, 1::2], geo)
    assert not torch.allclose(sem, geo)


def test_real_size_counts():
    from spatialgeo_core.config import real_size
    assert real_size().num_visual_tokens == 1152
    assert real_size(geometry=False).num_visual_tokens == 576


def test_concat_layout(model):
    cfg = dataclasses.replace(model.cfg, token_layout="concat")
    m = SpatialGeoForCausalLM(cfg).eval()
    m.load_state_dict(model.state_dict())
    px, _ = _batch(cfg)
    with torch.no_grad():
        a, b = model.encode_images(px), m.encode_images(px)
    n = cfg.num_patches
    assert torch.equal(b[:, :n], a[:, 0::2]) and torch.equal(b[:, n:], a[:, 1::2])


def test_geometry_embedding_is_the_sum_over_exactly_the_configured_levels(model):
    px, _ = _batch(model.cfg)
    bb = model.geo_tower.backbone
    with torch.no_grad():
        # run every block by hand, keep all final-normed outputs without CLS
        x = bb.patch_embed(px)
        x = torch.cat([bb.cls_token.expand(1, -1, -1), x], 1)
        x = x + bb.interpolate_pos_encoding(4, 4, x.dtype)
        feats = []
        for blk in bb.blocks:
            x = blk(x)
            feats.append(bb.norm(x)[:, 1:])
        expected = sum(model.geo_adapter[k](feats[layer])
                       for k, layer in enumerate(model.cfg.geometry.layers))
        got = model.geo_adapter(model.geo_tower(px))
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
        # a different block set gives a different embedding (the config really chooses)
        other = sum(model.geo_adapter[k](feats[layer]) for k, layer in enumerate([0, 1, 2, 3]))
        assert not torch.allclose(got, other)
    assert model.cfg.geometry.layers == [2, 3, 4, 5]        # the last 4 of 6 blocks


def test_geometry_layers_are_a_config_field():
    cfg = tiny()
    cfg2 = dataclasses.replace(cfg, geometry=dataclasses.replace(cfg.geometry, layers=[1, 3]))
    m = SpatialGeoForCausalLM(cfg2)
    assert len(m.geo_adapter) == 2
    with pytest.raises(ConfigError, match="geometry.layers"):
        GeometryTowerConfig(depth=6, layers=[2, 6])


def test_imagenet_input_norm_renormalises(model):
    cfg = dataclasses.replace(model.cfg, geometry=dataclasses.replace(model.cfg.geometry,
                                                                      input_norm="imagenet"))
    m = SpatialGeoForCausalLM(cfg).eval()
    m.load_state_dict(model.state_dict())
    px, _ = _batch(cfg)
    clip_mean = torch.tensor(cfg.image_mean).view(1, 3, 1, 1)
    clip_std = torch.tensor(cfg.image_std).view(1, 3, 1, 1)
    raw = px * clip_std + clip_mean
    net = (raw - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        a = m.geo_tower(px)
        b = model.geo_tower.backbone.intermediate_features(net, cfg.geometry.layers)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=0)


def test_pos_embed_uses_dinov2_scale_factor_rule_and_skips_matching_grid():
    cfg = GeometryTowerConfig(embed_dim=64, depth=1, num_heads=1, pos_embed_grid=37, layers=[0])
    vit = DinoVisionTransformer(cfg)
    with torch.no_grad():
        vit.pos_embed.normal_()
    same = vit.interpolate_pos_encoding(37, 37, torch.float32)
    assert same.data_ptr() == vit.pos_embed.data_ptr()
    out = vit.interpolate_pos_encoding(24, 24, torch.float32)
    grid = vit.pos_embed[:, 1:].reshape(1, 37, 37, 64).permute(0, 3, 1, 2)
    by_scale = F.interpolate(grid, scale_factor=(24.1 / 37, 24.1 / 37), mode="bicubic",
                             antialias=False)
    by_size = F.interpolate(grid, size=(24, 24), mode="bicubic", antialias=False)
    expected = by_scale.permute(0, 2, 3, 1).reshape(1, 576, 64)
    torch.testing.assert_close(out[:, 1:], expected, atol=0, rtol=0)
    assert torch.equal(out[:, :1], vit.pos_embed[:, :1])
    # the rule matters: the size-based resize (transformers' Dinov2) gives other numbers
    assert (by_size - by_scale).abs().max() > 1e-3


def test_dinov2_blocks_equal_transformers_dinov2():
    """Block math against transformers' Dinov2Model on the same weights (grid = stored grid)."""
    from transformers import Dinov2Config, Dinov2Model
    cfg = GeometryTowerConfig(embed_dim=64, depth=3, num_heads=2, pos_embed_grid=4, layers=[0, 2])
    ours = DinoVisionTransformer(cfg).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_(0, 0.2)
    hf = Dinov2Model(Dinov2Config(hidden_size=64, num_hidden_layers=3, num_attention_heads=2,
                                  intermediate_size=256, mlp_ratio=4, image_size=56, patch_size=14,
                                  layerscale_value=1.0, layer_norm_eps=1e-6)).eval()
    sd = ours.state_dict()
    new = {"embeddings.cls_token": sd["cls_token"], "embeddings.mask_token": sd["mask_token"],
           "embeddings.position_embeddings": sd["pos_embed"],
           "embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
           "embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
           "layernorm.weight": sd["norm.weight"], "layernorm.bias": sd["norm.bias"]}
    # attention projection names: transformers 5.x (q/k/v/o_proj) or 4.x (query/key/value/dense)
    v5 = "encoder.layer.0.attention.q_proj.weight" in hf.state_dict()
    q_n, k_n, v_n, o_n = (("attention.q_proj", "attention.k_proj", "attention.v_proj",
                           "attention.o_proj") if v5 else
                          ("attention.attention.query", "attention.attention.key",
                           "attention.attention.value", "attention.output.dense"))
    for i in range(3):
        p, h = f"blocks.{i}.", f"encoder.layer.{i}."
        q, k, v = sd[p + "attn.qkv.weight"].chunk(3)
        qb, kb, vb = sd[p + "attn.qkv.bias"].chunk(3)
        new.update({
            h + "norm1.weight": sd[p + "norm1.weight"], h + "norm1.bias": sd[p + "norm1.bias"],
            f"{h}{q_n}.weight": q, f"{h}{q_n}.bias": qb, f"{h}{k_n}.weight": k,
            f"{h}{k_n}.bias": kb, f"{h}{v_n}.weight": v, f"{h}{v_n}.bias": vb,
            f"{h}{o_n}.weight": sd[p + "attn.proj.weight"],
            f"{h}{o_n}.bias": sd[p + "attn.proj.bias"],
            h + "layer_scale1.lambda1": sd[p + "ls1.gamma"],
            h + "layer_scale2.lambda1": sd[p + "ls2.gamma"],
            h + "norm2.weight": sd[p + "norm2.weight"], h + "norm2.bias": sd[p + "norm2.bias"],
            h + "mlp.fc1.weight": sd[p + "mlp.fc1.weight"],
            h + "mlp.fc1.bias": sd[p + "mlp.fc1.bias"],
            h + "mlp.fc2.weight": sd[p + "mlp.fc2.weight"],
            h + "mlp.fc2.bias": sd[p + "mlp.fc2.bias"],
        })
    hf.load_state_dict(new, strict=True)
    x = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        hs = hf(pixel_values=x, output_hidden_states=True).hidden_states
        got = ours.intermediate_features(x, [0, 2])
    for layer, g in zip([0, 2], got, strict=True):
        torch.testing.assert_close(g, hf.layernorm(hs[layer + 1])[:, 1:], atol=2e-5, rtol=0)


def test_geometry_off_equals_transformers_llava():
    """CLIP-only arrangement == transformers' LlavaForConditionalGeneration (LLaVA-1.5)."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    from spatialgeo_core.clip_tower import hf_clip_config
    from spatialgeo_core.model import hf_llama_config
    cfg = dataclasses.replace(tiny(geometry=False), image_token_id=500)
    ours = source_model(cfg)
    hf_cfg = LlavaConfig(vision_config=hf_clip_config(cfg.clip),
                         text_config=hf_llama_config(cfg.llm), image_token_index=500,
                         projector_hidden_act="gelu", vision_feature_layer=-2,
                         vision_feature_select_strategy="default")
    hf = LlavaForConditionalGeneration(hf_cfg).eval()

    def sub(*names):
        for n in names:
            try:
                return hf.get_submodule(n)
            except AttributeError:
                continue
        raise AttributeError(names)

    vt = sub("model.vision_tower", "vision_tower")
    vt = getattr(vt, "vision_model", vt)
    vt.load_state_dict(ours.clip_tower.vision_model.state_dict())
    proj = sub("model.multi_modal_projector", "multi_modal_projector")
    proj.linear_1.load_state_dict(ours.clip_adapter[0].state_dict())
    proj.linear_2.load_state_dict(ours.clip_adapter[2].state_dict())
    lm = sub("model.language_model", "language_model.model")
    lm.load_state_dict(ours.llm.model.state_dict())
    sub("lm_head", "language_model.lm_head").load_state_dict(ours.llm.lm_head.state_dict())
    px, ids = _batch(cfg, batch=2)
    ids[ids == 500] = 499
    ids[:, 2:2 + cfg.num_visual_tokens] = 500
    with torch.no_grad():
        a = ours(ids, px)["logits"]
        b = hf(input_ids=ids, pixel_values=px).logits
    assert cfg.num_visual_tokens == 16
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_placeholder_count_mismatch_fails_with_both_numbers(model):
    px, ids = _batch(model.cfg)
    ids[0, 2] = 5
    with pytest.raises(ValueError, match=r"31 image placeholders.*32 visual tokens"):
        model(ids, px)


def test_dropping_only_in_training_and_equals_the_shortened_sequence():
    cfg = dataclasses.replace(tiny(), feature_drop_prob=0.99)
    m = source_model(cfg)
    px, ids = _batch(cfg, batch=2)
    labels = ids.masked_fill(ids == cfg.image_token_id, IGNORE_INDEX)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        m.eval()
        ev = m(ids, px, labels=labels, drop_generator=g)
        m0 = source_model(dataclasses.replace(cfg, feature_drop_prob=0.0))
        assert torch.equal(ev["logits"], m0(ids, px)["logits"])     # eval: never dropped
        m.train()
        tr = m(ids, px, labels=labels, drop_generator=torch.Generator().manual_seed(0))
        # both images dropped (u < 0.99 for this seed): explicit shorter sequence of geometry only
        assert (torch.rand(2, generator=torch.Generator().manual_seed(0)) < 0.99).all()
        vis = m.encode_images(px)                                    # [2, 32, D]
        keep = torch.ones(ids.shape[1], dtype=torch.bool)
        keep[2:2 + cfg.num_visual_tokens:2] = False                  # even = CLIP positions
        short_ids, short_labels = ids[:, keep], labels[:, keep]
        emb = m.embed(short_ids, vis[:, 1::2].contiguous())
        logits = m.llm(inputs_embeds=emb).logits
        torch.testing.assert_close(tr["loss"], causal_lm_loss(logits, short_labels),
                                   atol=1e-5, rtol=0)
        torch.testing.assert_close(tr["logits"][:, keep], logits, atol=1e-5, rtol=0)


def test_dropping_is_seeded_and_per_image():
    cfg = dataclasses.replace(tiny(), feature_drop_prob=0.5)
    m = source_model(cfg).train()
    px, ids = _batch(cfg, batch=8)
    with torch.no_grad():
        a = m(ids, px, drop_generator=torch.Generator().manual_seed(3))["logits"]
        b = m(ids, px, drop_generator=torch.Generator().manual_seed(3))["logits"]
        full = m.eval()(ids, px)["logits"]
    assert torch.equal(a, b)
    last = ids.shape[1] - 1
    changed = [not torch.allclose(a[i, last], full[i, last]) for i in range(8)]
    assert 0 < sum(changed) < 8                                      # some images, not all


def test_text_only_samples_touch_every_adapter_with_zero_weight():
    cfg = tiny()
    m = source_model(cfg).train()
    px = torch.randn(2, 3, 56, 56)
    ids = torch.randint(3, 500, (2, 10))
    labels = ids.clone()
    out = m(ids, px, labels=labels, image_used=torch.tensor([False, False]))
    out["loss"].backward()
    for name, p in (list(m.clip_adapter.named_parameters())
                    + list(m.geo_adapter.named_parameters())):
        assert p.grad is not None and torch.count_nonzero(p.grad) == 0, name


def test_config_round_trip_and_validation(tmp_path):
    cfg = tiny()
    cfg.save(tmp_path)
    assert SpatialGeoConfig.load(tmp_path) == cfg
    d = cfg.to_dict()
    d["geometry"]["bogus"] = 1
    with pytest.raises(ConfigError, match="bogus"):
        SpatialGeoConfig.from_dict(d)
    with pytest.raises(ConfigError, match="token_layout"):
        dataclasses.replace(cfg, token_layout="zigzag")
    with pytest.raises(ConfigError, match="feature_drop_prob"):
        dataclasses.replace(cfg, feature_drop_prob=1.5)
