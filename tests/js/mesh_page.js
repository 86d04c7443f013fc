// Bundled by esbuild (tests): loads a .glb with three.js's GLTFLoader and renders it unlit
// (MeshBasicMaterial with the file's base-colour texture) through a given pinhole camera, with
// morph target weights set by name or the file's first animation sampled at a time.
import * as THREE from 'three';
import { GLTFLoader } from 'three/examples/jsm/loaders/GLTFLoader.js';

async function renderView(job) {
  const renderer = new THREE.WebGLRenderer({ antialias: false, preserveDrawingBuffer: true, alpha: false });
  renderer.setPixelRatio(1);
  renderer.setSize(job.width, job.height);
  renderer.setClearColor(0x000000, 1);
  renderer.outputColorSpace = THREE.SRGBColorSpace;
  document.body.appendChild(renderer.domElement);
  const gltf = await new GLTFLoader().loadAsync(job.url);
  const scene = new THREE.Scene();
  scene.add(gltf.scene);
  const found = {};
  gltf.scene.traverse((obj) => {
    if (!obj.isMesh) return;
    const map = obj.material.map || null;
    obj.material = new THREE.MeshBasicMaterial({ map, color: map ? 0xffffff : 0xcc9e85 });
    for (const [name, value] of Object.entries(job.morph || {})) {
      const index = obj.morphTargetDictionary ? obj.morphTargetDictionary[name] : undefined;
      if (index === undefined) throw new Error(`no morph target named ${name}`);
      obj.morphTargetInfluences[index] = value;
      found[name] = index;
    }
  });
  if (job.animationTime !== null && job.animationTime !== undefined) {
    const mixer = new THREE.AnimationMixer(gltf.scene);
    const action = mixer.clipAction(gltf.animations[0]);
    action.setLoop(THREE.LoopOnce, 1);  // a repeating clip would wrap its last keyframe to the first
    action.clampWhenFinished = true;
    action.play();
    mixer.setTime(job.animationTime);
  }
  const camera = new THREE.PerspectiveCamera(job.fovY, job.width / job.height, 0.01, 20);
  camera.matrixAutoUpdate = false;
  camera.matrix.fromArray(job.worldFromCamera);  // column-major, three.js camera axes
  camera.matrixWorldNeedsUpdate = true;
  scene.updateMatrixWorld(true);
  camera.updateMatrixWorld(true);
  renderer.render(scene, camera);
  const png = renderer.domElement.toDataURL('image/png');
  renderer.domElement.remove();
  renderer.dispose();
  return { png, morphIndices: found, animations: gltf.animations.map((a) => a.name) };
}

window.renderJobs = async (jobs) => {
  const out = [];
  for (const job of jobs) out.push(await renderView(job));
  return out;
};
window.pageReady = true;
